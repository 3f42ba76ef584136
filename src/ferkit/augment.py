"""Batched data augmentation on float tensors (B, C, H, W) in [0, 1], in plain torch.

Why batched: per-image PIL transforms cost more than a compact model's training step on a
CPU. Here every random parameter is drawn per sample in one call, all geometric ops (resize,
crop/scale, flip, rotation, shear, translation, RandAugment's geometric ops) are folded into
one affine matrix per sample and applied with a single ``F.affine_grid`` + ``F.grid_sample``,
and pixel ops are vectorised over the batch. It runs on whatever device the batch is on.

Randomness: pass ``generator=`` (a ``torch.Generator``) to ``forward`` for reproducible
output; otherwise the global torch RNG is used. Parameters are drawn on the generator's device
(CPU for the global RNG) and moved to the batch's device, so a seed gives the same parameters
on every device.

Output is always ``image_size`` x ``image_size`` (the batch may come at another size, e.g.
48 px data for a 64 px model), in [0, 1], with ``channels`` channels (RGB input for a gray
model is converted with ITU-R 601 luma weights, gray input for an RGB model is repeated).
Normalise afterwards with :func:`normalize`.

Policies (``build_augment``; any field of :class:`AugmentConfig` can be overridden):

- ``none`` / ``eval``: resize to ``image_size`` only (bilinear, antialiased); deterministic.
- ``train`` (supervised default): random resized crop with area 0.8-1 and aspect 0.9-1.1,
  horizontal flip p 0.5, rotation +-10 deg, brightness and contrast +-20 %, random erasing
  p 0.25 (area 0.02-0.33, aspect 0.3-3.3, filled with 0). The usual FER recipe (SCN/EAC/RUL
  crop + flip + erasing) kept mild, since 48 px faces have little margin to crop.
- ``weak`` (FixMatch weak view): horizontal flip p 0.5 + translation up to 12.5 % per axis,
  the uncovered border filled by reflection (FixMatch pads with ``reflect``).
- ``strong`` (FixMatch strong view): ``weak`` + RandAugment: per sample N=2 distinct ops drawn
  uniformly from ``RANDAUG_OPS``, each with its own magnitude m ~ U(0, 1) (FixMatch's
  "RandAugmentMC" draws a random magnitude instead of a fixed one). Ranges at m = 1:
  rotate +-30 deg, shear +-0.3, translate +-30 % of the side, brightness / contrast /
  sharpness factor 1 +- 0.9, posterize down to 4 bits, solarize threshold 1 - m, cutout a
  square of side m * 50 % filled with 0.5, autocontrast and equalize (256-bin histogram
  equalisation per channel) take no magnitude. Differences from per-image RandAugment,
  chosen for speed: ops run in the fixed order of ``RANDAUG_OPS`` (geometric ones merged into
  the single affine warp), not in the drawn order.

Normalisation constants: gray models use mean 0.5 / std 0.5 (maps [0, 1] to [-1, 1]; the
FER2013 pixel mean is ~0.51); RGB models use the ImageNet mean / std that torchvision-format
(e.g. MS-Celeb ResNet) weights were trained with. See :func:`default_mean_std`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError

GRAY_MEAN: tuple[float, ...] = (0.5,)
GRAY_STD: tuple[float, ...] = (0.5,)
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
#: ITU-R 601 luma weights (what PIL's convert("L") uses)
LUMA = (0.299, 0.587, 0.114)

RANDAUG_OPS: tuple[str, ...] = (
    "rotate", "shear_x", "shear_y", "translate_x", "translate_y",  # geometric: merged into the warp
    "autocontrast", "equalize", "brightness", "contrast", "sharpness", "posterize", "solarize", "cutout",
)
_GEOMETRIC_OPS = RANDAUG_OPS[:5]


def default_mean_std(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for a model with ``channels`` inputs: 0.5/0.5 for gray, ImageNet for RGB."""
    return (GRAY_MEAN, GRAY_STD) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)


def normalize(x: Tensor, mean: float | Sequence[float] = GRAY_MEAN,
              std: float | Sequence[float] = GRAY_STD) -> Tensor:
    """``(x - mean) / std`` per channel; a scalar or one value applies to every channel."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return (x - m) / s


class Normalize(nn.Module):
    """Module form of :func:`normalize` (e.g. to put in front of an exported model)."""

    def __init__(self, mean: float | Sequence[float] = GRAY_MEAN, std: float | Sequence[float] = GRAY_STD):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


# ---------------------------------------------------------------------------------------
# Config and policies
# ---------------------------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """Every knob; zero / (1, 1) means off. Fractions are of the image side unless noted."""

    scale: tuple[float, float] = (1.0, 1.0)  # crop area fraction (RandomResizedCrop); > 1 zooms out
    ratio: tuple[float, float] = (1.0, 1.0)  # crop aspect ratio w/h
    translate: float = 0.0  # max shift per axis
    rotate: float = 0.0  # max |angle| in degrees
    shear: float = 0.0  # max |shear| per axis (tangent)
    hflip: float = 0.0  # probability
    brightness: float = 0.0  # factor in [1 - b, 1 + b]
    contrast: float = 0.0  # factor in [1 - c, 1 + c]
    saturation: float = 0.0  # RGB only
    hue: float = 0.0  # RGB only; shift in turns, <= 0.5
    erase_p: float = 0.0  # random erasing probability
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area fraction
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # erased box aspect
    erase_value: float | str = 0.0  # a value, or "random" (uniform noise)
    noise_p: float = 0.0  # Gaussian noise probability
    noise_std: float = 0.03  # max noise std (drawn per sample in [0, noise_std])
    blur_p: float = 0.0  # Gaussian blur probability
    blur_sigma: tuple[float, float] = (0.1, 1.0)  # in pixels of the output
    randaug_n: int = 0  # RandAugment ops per sample (0 = off)
    randaug_ops: tuple[str, ...] = RANDAUG_OPS
    randaug_magnitude: tuple[float, float] = (0.0, 1.0)  # m drawn per sample and op in this range
    padding_mode: str = "zeros"  # grid_sample padding outside the source: zeros | border | reflection

    def validate(self) -> AugmentConfig:
        for name in ("hflip", "erase_p", "noise_p", "blur_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"augment {name} is a probability, got {v}")
        for name in ("translate", "rotate", "shear", "brightness", "contrast", "saturation", "hue", "noise_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment {name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "ratio", "erase_scale", "erase_ratio", "blur_sigma", "randaug_magnitude"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"augment {name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.scale[0] <= 0 or self.ratio[0] <= 0:
            raise ConfigError("augment scale and ratio must be > 0")
        if self.hue > 0.5:
            raise ConfigError(f"augment hue is at most 0.5 turn, got {self.hue}")
        unknown = [op for op in self.randaug_ops if op not in RANDAUG_OPS]
        if unknown:
            raise ConfigError(f"unknown RandAugment op(s) {unknown}; known: {', '.join(RANDAUG_OPS)}")
        if not 0 <= self.randaug_n <= len(self.randaug_ops):
            raise ConfigError(f"randaug_n must be in [0, {len(self.randaug_ops)}], got {self.randaug_n}")
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise ConfigError(f"unknown padding_mode {self.padding_mode!r}; expected zeros, border or reflection")
        if not (isinstance(self.erase_value, (int, float)) or self.erase_value == "random"):
            raise ConfigError(f"erase_value must be a number or 'random', got {self.erase_value!r}")
        return self


POLICIES: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "eval": AugmentConfig(),
    "train": AugmentConfig(scale=(0.8, 1.0), ratio=(0.9, 1.1), hflip=0.5, rotate=10.0, brightness=0.2,
                           contrast=0.2, erase_p=0.25),
    "weak": AugmentConfig(hflip=0.5, translate=0.125, padding_mode="reflection"),
    "strong": AugmentConfig(hflip=0.5, translate=0.125, randaug_n=2, padding_mode="reflection"),
}


def list_policies() -> list[str]:
    return list(POLICIES)


def build_augment(policy: str, image_size: int, channels: int = 1, **overrides: Any) -> Augment:
    """The augmentation module for ``policy`` with any :class:`AugmentConfig` field overridden."""
    key = str(policy).lower()
    if key not in POLICIES:
        raise ConfigError(f"unknown augment policy {policy!r}; known: {', '.join(POLICIES)}")
    known = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown augment option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for k, v in overrides.items():  # YAML gives lists where the dataclass has tuples
        if isinstance(v, list):
            overrides[k] = tuple(v)
    cfg = replace(POLICIES[key], **overrides).validate()
    if int(image_size) < 1 or int(channels) not in (1, 3):
        raise ConfigError(f"augment needs image_size >= 1 and channels 1 or 3, got {image_size}, {channels}")
    return Augment(cfg, int(image_size), int(channels), name=key)


# ---------------------------------------------------------------------------------------
# Functional ops: per-sample parameters as (B,) tensors on the batch's device
# ---------------------------------------------------------------------------------------
def _bc(v: Tensor) -> Tensor:
    return v.reshape(-1, 1, 1, 1)


def to_channels(x: Tensor, channels: int) -> Tensor:
    """RGB -> gray (luma) or gray -> RGB (repeat) when the batch's channel count differs."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert a {c}-channel batch to {channels} channels")


def grayscale(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of a gray or RGB batch."""
    return to_channels(x, 1)


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to size x size, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def warp_affine(x: Tensor, theta: Tensor, size: int, padding_mode: str = "zeros") -> Tensor:
    """Sample ``x`` at ``theta`` (B, 2, 3; output -> input, normalised coords) into size x size."""
    # the same grid as F.affine_grid(theta, ..., align_corners=False), built by broadcasting:
    # affine_grid's batched matmul with an inner size of 3 is ~10x slower on a CPU
    theta = theta.to(x.dtype)
    B = theta.shape[0]
    base = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1  # pixel centres
    col_u = theta[:, :, 0].reshape(B, 1, 1, 2)
    row_v = theta[:, :, 1].reshape(B, 1, 1, 2) * base.reshape(1, size, 1, 1) + theta[:, :, 2].reshape(B, 1, 1, 2)
    grid = torch.addcmul(row_v, col_u, base.reshape(1, 1, size, 1))  # (B, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def affine_matrices(angle_deg: Tensor, shear_x: Tensor, shear_y: Tensor, scale_x: Tensor, scale_y: Tensor,
                    tx: Tensor, ty: Tensor, flip: Tensor) -> Tensor:
    """Output -> input matrices (B, 2, 3): input = R(angle) Sh(sx, sy) diag(flip*scale_x, scale_y) out + t.

    Coordinates are normalised to [-1, 1]; ``scale`` < 1 zooms in (crops), ``flip`` is +-1,
    ``tx``/``ty`` are in normalised units (1.0 = half the image side).
    """
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    # R @ [[1, shx], [shy, 1]]
    m00 = cos - sin * shear_y
    m01 = cos * shear_x - sin
    m10 = sin + cos * shear_y
    m11 = sin * shear_x + cos
    sx = scale_x * flip
    row0 = torch.stack([m00 * sx, m01 * scale_y, tx], dim=1)
    row1 = torch.stack([m10 * sx, m11 * scale_y, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def hflip(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror left-right; with ``mask`` (B,) bool only those samples."""
    if mask is None:
        return x.flip(-1)
    return torch.where(_bc(mask), x.flip(-1), x)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return x * _bc(factor)


def _mean_gray(x: Tensor) -> Tensor:
    """(B,) mean luma of each sample."""
    m = x.mean(dim=(2, 3))
    if x.shape[1] == 3:
        return m @ torch.tensor(LUMA, dtype=x.dtype, device=x.device)
    return m.mean(1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the per-sample mean gray level (like PIL / torchvision)."""
    mean = _bc(_mean_gray(x))
    return (x - mean) * _bc(factor) + mean


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    if x.shape[1] != 3:
        return x
    g = grayscale(x)
    return (x - g) * _bc(factor) + g


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate chroma in YIQ space by ``shift`` turns (a cheap, linear stand-in for HSV hue)."""
    if x.shape[1] != 3:
        return x
    t = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                     dtype=x.dtype, device=x.device)
    a = shift.to(x.dtype) * (2 * math.pi)
    cos, sin = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                       torch.stack([zero, sin, cos], 1)], 1)  # (B, 3, 3)
    m = torch.linalg.inv(t) @ rot @ t
    return torch.einsum("bij,bjhw->bihw", m, x)


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each sample to the full [0, 1] range."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    ok = span > 1e-3
    return torch.where(ok, (x - lo) / span.clamp_min(1e-3), x)


def equalize(x: Tensor) -> Tensor:
    """Histogram equalisation per sample and channel on 256 levels."""
    B, C, H, W = x.shape
    q = (x.clamp(0, 1) * 255).round().long().reshape(B * C, H * W)
    hist = torch.zeros(B * C, 256, dtype=x.dtype, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=x.dtype))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    denom = (H * W - cdf_min)
    lut = ((cdf - cdf_min) / denom.clamp_min(1)).clamp(0, 1)
    out = lut.gather(1, q).reshape(B, C, H, W)
    flat = (denom <= 0).reshape(B, C, 1, 1)  # a constant channel stays as it is
    return torch.where(flat, x, out)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep ``bits`` (B,) of 8 bits per value."""
    step = _bc(torch.pow(2.0, 8 - bits.to(x.dtype)))
    return torch.floor(x * 255 / step) * step / 255


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert values at or above ``threshold`` (B,)."""
    return torch.where(x >= _bc(threshold), 1.0 - x, x)


def adjust_sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """PIL-style: blend with a 3x3 smoothed copy (factor 0 = smooth, 1 = identity, 2 = sharper)."""
    C = x.shape[1]
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(C, 1, 3, 3), groups=C)
    return smooth + _bc(factor) * (x - smooth)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` (B,) in pixels."""
    B, C, H, W = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma.to(x.dtype)[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, B * C, H, W), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def box_mask(height: int, width: int, y0: Tensor, x0: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """(B, 1, H, W) bool mask of the boxes [y0, y0 + h) x [x0, x0 + w) (integer tensors (B,))."""
    ys = torch.arange(height, device=y0.device).reshape(1, 1, height, 1)
    xs = torch.arange(width, device=y0.device).reshape(1, 1, 1, width)
    rows = (ys >= _bc(y0)) & (ys < _bc(y0 + h))  # (B, 1, H, 1)
    cols = (xs >= _bc(x0)) & (xs < _bc(x0 + w))  # (B, 1, 1, W)
    return rows & cols


# ---------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------
class _Draw:
    """Uniform draws from the generator (or the global RNG), moved to the batch's device."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.g = generator
        self.src = generator.device if generator is not None else torch.device("cpu")
        self.device = device

    def u(self, n: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        r = torch.rand(n, generator=self.g, device=self.src).to(self.device)
        return r * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else r

    def sign(self, n: int) -> Tensor:
        return torch.where(self.u(n) < 0.5, -1.0, 1.0)

    def rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.g, device=self.src).to(self.device)


class Augment(nn.Module):
    """Applies an :class:`AugmentConfig` to (B, C, H, W) batches; see the module docstring."""

    def __init__(self, config: AugmentConfig, image_size: int, channels: int = 1, name: str = "custom") -> None:
        super().__init__()
        self.config = config.validate()
        self.image_size = image_size
        self.channels = channels
        self.name = name
        c = config
        self._geometric = (c.scale != (1.0, 1.0) or c.ratio != (1.0, 1.0) or c.translate > 0 or c.rotate > 0
                           or c.shear > 0 or c.hflip > 0
                           or (c.randaug_n > 0 and any(op in _GEOMETRIC_OPS for op in c.randaug_ops)))
        self.deterministic = not (self._geometric or c.brightness or c.contrast or c.saturation or c.hue
                                  or c.erase_p or c.noise_p or c.blur_p or c.randaug_n)

    def extra_repr(self) -> str:
        d = asdict(self.config)
        default = asdict(AugmentConfig())
        changed = {k: v for k, v in d.items() if v != default[k]}
        return f"policy={self.name!r}, image_size={self.image_size}, channels={self.channels}, {changed}"

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"augment expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float() / 255.0
        x = to_channels(x, self.channels)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.channels, self.image_size, self.image_size)
        if self.deterministic:  # bilinear (antialiased or not) averages pixels: [0, 1] stays in range
            return resize(x, self.image_size)
        c = self.config
        B = x.shape[0]
        draw = _Draw(generator, x.device)

        # which RandAugment ops each sample gets (N distinct ones), and their magnitudes
        ra: dict[str, tuple[Tensor, Tensor]] = {}
        if c.randaug_n > 0:
            ops = list(c.randaug_ops)
            choice = draw.rand(B, len(ops)).argsort(dim=1)[:, : c.randaug_n]
            m_lo, m_hi = c.randaug_magnitude
            mags = draw.rand(B, len(ops)) * (m_hi - m_lo) + m_lo
            for k, op in enumerate(ops):
                ra[op] = ((choice == k).any(1), mags[:, k])

        if self._geometric:
            # downscale big inputs first (antialiased) so the warp does not alias
            if min(x.shape[-2:]) > 1.5 * self.image_size:
                x = resize(x, self.image_size)
            x = warp_affine(x, self._theta(B, draw, ra), self.image_size, c.padding_mode)
        else:
            x = resize(x, self.image_size)

        if c.brightness > 0 or c.contrast > 0:
            # brightness b then contrast k around the mean gray m, fused into one pass:
            # ((x b) - b m) k + b m = x (b k) + b m (1 - k)   (no clamp between the two)
            ones = torch.ones(B, device=x.device)
            b = draw.u(B, max(0.0, 1 - c.brightness), 1 + c.brightness) if c.brightness > 0 else ones
            k = draw.u(B, max(0.0, 1 - c.contrast), 1 + c.contrast) if c.contrast > 0 else ones
            mean = _mean_gray(x) if c.contrast > 0 else torch.zeros(B, device=x.device)
            x = torch.addcmul(_bc(b * mean * (1 - k)).to(x.dtype), x, _bc(b * k).to(x.dtype))
        if x.shape[1] == 3:
            if c.saturation > 0:
                x = adjust_saturation(x, draw.u(B, max(0.0, 1 - c.saturation), 1 + c.saturation))
            if c.hue > 0:
                x = adjust_hue(x, draw.u(B, -c.hue, c.hue))
        if c.brightness > 0 or c.contrast > 0 or c.saturation > 0 or c.hue > 0:
            x = x.clamp(0, 1)

        if ra:
            x = self._randaug_pixel_ops(x, ra, draw)
        if c.blur_p > 0:
            on, sigma = draw.u(B) < c.blur_p, draw.u(B, *c.blur_sigma)
            x = self._apply_some(x, on, lambda v, idx: gaussian_blur(v, sigma[idx]))
        if c.noise_p > 0:
            on = (draw.u(B) < c.noise_p).to(x.dtype) * draw.u(B, 0.0, c.noise_std)
            noise = torch.randn(x.shape, generator=draw.g, device=draw.src).to(x.device, x.dtype)
            x = (x + noise * _bc(on)).clamp(0, 1)
        if c.erase_p > 0:
            x = self._erase(x, draw)
        return x

    # -- geometry ---------------------------------------------------------------------------
    def _theta(self, B: int, draw: _Draw, ra: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        c = self.config
        zeros = torch.zeros(B, device=draw.device)
        # random resized crop: side fractions from area and aspect
        if c.scale != (1.0, 1.0) or c.ratio != (1.0, 1.0):
            area = draw.u(B, *c.scale)
            logr = draw.u(B, math.log(c.ratio[0]), math.log(c.ratio[1]))
            sx = torch.sqrt(area * torch.exp(logr))
            sy = torch.sqrt(area / torch.exp(logr))
            # crop centre anywhere the crop fits (or centred when zooming out)
            tx = (1 - sx).clamp_min(0) * (2 * draw.u(B) - 1)
            ty = (1 - sy).clamp_min(0) * (2 * draw.u(B) - 1)
        else:
            sx = sy = torch.ones(B, device=draw.device)
            tx, ty = zeros.clone(), zeros.clone()
        if c.translate > 0:
            tx = tx + draw.u(B, -2 * c.translate, 2 * c.translate)
            ty = ty + draw.u(B, -2 * c.translate, 2 * c.translate)
        angle = draw.u(B, -c.rotate, c.rotate) if c.rotate > 0 else zeros.clone()
        shx = draw.u(B, -c.shear, c.shear) if c.shear > 0 else zeros.clone()
        shy = draw.u(B, -c.shear, c.shear) if c.shear > 0 else zeros.clone()
        flip = torch.where(draw.u(B) < c.hflip, -1.0, 1.0) if c.hflip > 0 else torch.ones(B, device=draw.device)
        # RandAugment's geometric ops, for the samples that drew them
        for op, (sel, m) in ra.items():
            if op not in _GEOMETRIC_OPS:
                continue
            v = sel.to(m.dtype) * m * draw.sign(B)
            if op == "rotate":
                angle = angle + 30.0 * v
            elif op == "shear_x":
                shx = shx + 0.3 * v
            elif op == "shear_y":
                shy = shy + 0.3 * v
            elif op == "translate_x":
                tx = tx + 0.6 * v  # 0.3 of the side = 0.6 normalised units
            else:
                ty = ty + 0.6 * v
        return affine_matrices(angle, shx, shy, sx, sy, tx, ty, flip)

    # -- pixel ops ------------------------------------------------------------------------------
    @staticmethod
    def _apply_some(x: Tensor, mask: Tensor, fn: Any) -> Tensor:
        """x[mask] = fn(x[mask], idx) without touching the other samples."""
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        x = x.clone()
        x[idx] = fn(x[idx], idx)
        return x

    def _randaug_pixel_ops(self, x: Tensor, ra: dict[str, tuple[Tensor, Tensor]], draw: _Draw) -> Tensor:
        B = x.shape[0]
        for op in RANDAUG_OPS:  # fixed order
            if op not in ra or op in _GEOMETRIC_OPS:
                continue
            sel, m = ra[op]
            signed = 1.0 + 0.9 * m * draw.sign(B)
            if op == "autocontrast":
                x = self._apply_some(x, sel, lambda v, idx: autocontrast(v))
            elif op == "equalize":
                x = self._apply_some(x, sel, lambda v, idx: equalize(v))
            elif op == "brightness":
                x = self._apply_some(x, sel, lambda v, idx, f=signed: adjust_brightness(v, f[idx]).clamp(0, 1))
            elif op == "contrast":
                x = self._apply_some(x, sel, lambda v, idx, f=signed: adjust_contrast(v, f[idx]).clamp(0, 1))
            elif op == "sharpness":
                x = self._apply_some(x, sel, lambda v, idx, f=signed: adjust_sharpness(v, f[idx]).clamp(0, 1))
            elif op == "posterize":
                bits = torch.round(8 - 4 * m)
                x = self._apply_some(x, sel, lambda v, idx, b=bits: posterize(v, b[idx]))
            elif op == "solarize":
                x = self._apply_some(x, sel, lambda v, idx, t=1.0 - m: solarize(v, t[idx]))
            elif op == "cutout":
                H, W = x.shape[-2:]
                side = torch.round(m * 0.5 * min(H, W)).long()
                cy = (draw.u(B) * H).long()
                cx = (draw.u(B) * W).long()
                mask = box_mask(H, W, cy - side // 2, cx - side // 2, side * sel, side)
                x = x.masked_fill(mask, 0.5)
        return x

    def _erase(self, x: Tensor, draw: _Draw) -> Tensor:
        """Random erasing (Zhong et al.): one box per selected sample, area/aspect per sample.

        Boxes too large for the image are clipped to it rather than redrawn (torchvision
        retries 10 times), which slightly shrinks the largest, most elongated boxes.
        """
        c = self.config
        B, _, H, W = x.shape
        on = draw.u(B) < c.erase_p
        area = draw.u(B, *c.erase_scale) * (H * W)
        ratio = torch.exp(draw.u(B, math.log(c.erase_ratio[0]), math.log(c.erase_ratio[1])))
        h = torch.sqrt(area * ratio).round().clamp(1, H).long()
        w = torch.sqrt(area / ratio).round().clamp(1, W).long()
        y0 = (draw.u(B) * (H - h + 1).to(area.dtype)).long()
        x0 = (draw.u(B) * (W - w + 1).to(area.dtype)).long()
        mask = box_mask(H, W, y0, x0, h * on, w)  # h = 0: nothing erased
        if c.erase_value == "random":
            fill = torch.rand(x.shape, generator=draw.g, device=draw.src).to(x.device, x.dtype)
            return torch.where(mask, fill, x)
        return x.masked_fill(mask, float(c.erase_value))
