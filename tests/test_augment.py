"""Batched augmentation: shapes, range, determinism, and that each op does what it says."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ferkit.augment import (
    RANDAUG_OPS,
    Normalize,
    affine_matrices,
    build_augment,
    default_mean_std,
    equalize,
    list_policies,
    normalize,
    warp_affine,
)
from ferkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

POLICIES = ["none", "eval", "train", "weak", "strong"]


def _faces(n: int = 8, c: int = 1, s: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, s).expand(s, s)
    return (0.5 * ramp + 0.5 * torch.rand(n, c, s, s, generator=g)).clamp(0, 1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("src,dst", [(48, 48), (48, 64), (64, 48)])
def test_shape_and_range(policy: str, channels: int, src: int, dst: int) -> None:
    aug = build_augment(policy, dst, channels=channels)
    y = aug(_faces(6, channels, src), generator=_gen())
    assert y.shape == (6, channels, dst, dst)
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("policy", POLICIES)
def test_input_is_not_modified(policy: str) -> None:
    x = _faces(4) * 1.2  # some values above 1
    before = x.clone()
    build_augment(policy, 48, saturation=0.3)(x, generator=_gen())
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_channel_conversion_and_uint8_input() -> None:
    rgb = _faces(4, 3)
    gray = build_augment("eval", 48, channels=1)(rgb)
    w = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(gray, (rgb * w).sum(1, keepdim=True))
    assert build_augment("eval", 48, channels=3)(gray).shape == (4, 3, 48, 48)
    u8 = (rgb * 255).round().to(torch.uint8)
    torch.testing.assert_close(build_augment("eval", 48, channels=3)(u8), u8.float() / 255)
    assert build_augment("train", 48)(torch.zeros(0, 1, 48, 48)).shape == (0, 1, 48, 48)


@pytest.mark.parametrize("policy", ["train", "weak", "strong"])
def test_seeded_generator_is_deterministic(policy: str) -> None:
    aug = build_augment(policy, 48)
    x = _faces(16)
    a, b = aug(x, generator=_gen(3)), aug(x, generator=_gen(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, aug(x, generator=_gen(4)))
    torch.manual_seed(5)
    c = aug(x)
    torch.manual_seed(5)
    torch.testing.assert_close(c, aug(x), rtol=0, atol=0)


def test_eval_policy_is_deterministic_resize() -> None:
    x = _faces(4, 1, 48)
    for policy in ("eval", "none"):
        aug = build_augment(policy, 48)
        assert aug.deterministic
        torch.testing.assert_close(aug(x), x)
    up = build_augment("eval", 64)
    torch.testing.assert_close(up(x, generator=_gen(1)), up(x, generator=_gen(2)))
    torch.testing.assert_close(up(x), F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))


def test_policies_differ() -> None:
    x = _faces(16)
    outs = {p: build_augment(p, 48)(x, generator=_gen(0)) for p in ("eval", "train", "weak", "strong")}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outs[a] - outs[b]).abs().mean() > 1e-3, (a, b)
    assert set(POLICIES) <= set(list_policies())


def test_flip_really_mirrors() -> None:
    x = _faces(8)
    torch.testing.assert_close(build_augment("none", 48, hflip=1.0)(x, generator=_gen()), x.flip(-1),
                               rtol=0, atol=1e-5)
    y = build_augment("none", 48, hflip=0.5)(x, generator=_gen(1))
    flipped = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(8)]
    same = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(8)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_warp_matches_affine_grid_and_rotation_direction() -> None:
    theta = torch.tensor([[[0.8, -0.2, 0.1], [0.3, 0.9, -0.2]]]).repeat(2, 1, 1)
    x = _faces(2, 2, 30)
    ref = F.grid_sample(x, F.affine_grid(theta, [2, 2, 17, 17], align_corners=False), align_corners=False)
    torch.testing.assert_close(warp_affine(x, theta, 17), ref, rtol=0, atol=1e-5)
    one, zero = torch.ones(1), torch.zeros(1)
    ident = affine_matrices(zero, zero, zero, one, one, zero, zero, one)
    torch.testing.assert_close(ident, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    rot = affine_matrices(torch.full((1,), 90.0), zero, zero, one, one, zero, zero, one)
    y = warp_affine(x[:1], rot, 30)  # a 90-degree rotation is a lossless permutation
    assert any(torch.allclose(y, x[:1].rot90(k, dims=(2, 3)), atol=1e-5) for k in (1, 3))


def test_erasing_covers_the_expected_area() -> None:
    x = torch.ones(512, 1, 32, 32)
    y = build_augment("none", 32, erase_p=1.0)(x, generator=_gen())
    frac = (y == 0).float().mean(dim=(1, 2, 3))
    assert float(frac.min()) > 0.0 and float(frac.max()) <= 0.36
    # E[area] = (0.02 + 0.33) / 2 = 0.175; clipping of elongated boxes shrinks it a little
    assert 0.13 < float(frac.mean()) < 0.2
    some = build_augment("none", 32, erase_p=0.25)(x, generator=_gen(1))
    hit = ((some == 0).flatten(1).any(1)).float().mean()
    assert 0.15 < float(hit) < 0.35
    rnd = build_augment("none", 32, erase_p=1.0, erase_value="random")(x, generator=_gen())
    assert float((rnd < 1).float().mean()) > 0.1


def test_jitter_changes_levels_only_when_asked() -> None:
    x = _faces(32)
    y = build_augment("none", 48, brightness=0.4)(x, generator=_gen())
    ratio = (y.flatten(1).mean(1) / x.flatten(1).mean(1))
    assert float(ratio.std()) > 0.05  # per-sample factors
    c = build_augment("none", 48, contrast=0.5)(x, generator=_gen())
    torch.testing.assert_close(c.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)
    rgb = _faces(8, 3)
    s = build_augment("none", 48, channels=3, saturation=0.5, hue=0.2)(rgb, generator=_gen())
    assert (s - rgb).abs().mean() > 1e-3 and float(s.min()) >= 0 and float(s.max()) <= 1


@pytest.mark.parametrize("op", RANDAUG_OPS)
def test_each_randaugment_op(op: str) -> None:
    x = _faces(16)
    aug = build_augment("none", 48, randaug_n=1, randaug_ops=(op,), randaug_magnitude=(0.5, 1.0))
    y = aug(x, generator=_gen())
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert (y - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() > 0.5, op


def test_equalize_spreads_histogram() -> None:
    x = 0.4 + 0.1 * torch.rand(2, 1, 32, 32)
    y = equalize(x)
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0
    flat = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(equalize(flat), flat)


def test_noise_and_blur_options() -> None:
    x = _faces(8)
    n = build_augment("none", 48, noise_p=1.0, noise_std=0.1)(x, generator=_gen())
    b = build_augment("none", 48, blur_p=1.0, blur_sigma=(1.0, 1.5))(x, generator=_gen())
    assert (n - x).abs().mean() > 1e-3
    assert (b[..., 1:] - b[..., :-1]).abs().mean() < (x[..., 1:] - x[..., :-1]).abs().mean()


def test_normalize_helpers() -> None:
    x = torch.rand(2, 3, 4, 4)
    mean, std = default_mean_std(3)
    y = normalize(x, mean, std)
    torch.testing.assert_close(y[:, 1], (x[:, 1] - mean[1]) / std[1])
    torch.testing.assert_close(Normalize(mean, std)(x), y)
    g = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(normalize(g), g * 2 - 1)
    assert default_mean_std(1) == ((0.5,), (0.5,))


def test_bad_policy_and_options() -> None:
    with pytest.raises(ConfigError, match="train"):
        build_augment("fancy", 48)
    with pytest.raises(ConfigError, match="rotate"):
        build_augment("train", 48, rotation=10)
    with pytest.raises(ConfigError):
        build_augment("train", 48, hflip=1.5)
    with pytest.raises(ConfigError):
        build_augment("strong", 48, randaug_ops=("rotate", "warp"))
    with pytest.raises(ValueError):
        build_augment("train", 48)(torch.rand(1, 48, 48))
    aug = build_augment("train", 48, scale=[0.5, 1.0])  # YAML lists accepted
    assert aug.config.scale == (0.5, 1.0)
    assert math.isclose(build_augment("train", 48).config.erase_p, 0.25)
