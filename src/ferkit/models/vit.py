"""Vision Transformers (tiny / small / base: width 192 / 384 / 768, depth 12, heads 3 / 6 / 12).

Pre-norm blocks with ``F.scaled_dot_product_attention``, a cls token and learned position
embeddings sized from ``image_size``. Parameter names follow the common ViT layout
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.attn.qkv`` ...).

Patch size: ``patch_size=None`` picks 16 at >= 112 px (224 px -> 14x14 tokens, the standard
ViT) and below that the divisor of ``image_size`` giving a grid closest to 12x12
(48 px -> 4, 12x12 tokens; 64 px -> 4, 16x16; 96 px -> 8, 12x12; closeness on a log scale). A 16 px patch on a 48 px
face would leave a 3x3 grid, too coarse to learn from.

``embed`` = cls token after the final norm; ``feature_map`` = the patch tokens (also after the
final norm) reshaped to (B, D, h, w).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.models.base import Backbone, init_weights
from ferkit.models.registry import register_model


def default_patch_size(image_size: int) -> int:
    """16 at >= 112 px, else the divisor of image_size whose grid is closest to 12x12."""
    if image_size >= 112 and image_size % 16 == 0:
        return 16
    target = 14 if image_size >= 112 else 12
    divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
    return min(divisors, key=lambda p: (abs(math.log(image_size / p / target)), p))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float, drop: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class VisionTransformer(Backbone):
    def __init__(self, in_channels: int, image_size: int, patch_size: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, drop: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if dim % heads:
            raise ConfigError(f"ViT width {dim} is not divisible by {heads} heads")
        self.grid = image_size // patch_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, r, drop) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.feature_dim = dim
        init_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight  # like a linear layer on the flattened patch
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02)

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.grid * self.patch_size,) * 2:
            raise ValueError(f"ViT built for {self.grid * self.patch_size} px input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)  # (B, 1 + N, D)

    def feature_map(self, feats: Tensor) -> Tensor:
        B, _, D = feats.shape
        return feats[:, 1:].transpose(1, 2).reshape(B, D, self.grid, self.grid)

    def pool(self, feats: Tensor) -> Tensor:
        return feats[:, 0]


def _vit(dim: int, heads: int, in_channels: int, image_size: int, patch_size: int | None, depth: int,
         drop_path: float, mlp_ratio: float) -> VisionTransformer:
    patch = int(patch_size) if patch_size else default_patch_size(image_size)
    net = VisionTransformer(in_channels, image_size, patch, dim, depth, heads, mlp_ratio, drop_path)
    net.options = {"patch_size": patch, "depth": int(depth), "drop_path": float(drop_path),
                   "mlp_ratio": float(mlp_ratio)}
    return net


@register_model("vit_tiny")
def vit_tiny(in_channels: int = 1, image_size: int = 48, patch_size: int | None = None, depth: int = 12,
             drop_path: float = 0.1, mlp_ratio: float = 4.0) -> VisionTransformer:
    """ViT-Ti: width 192, 3 heads (5.5 M params at 224 px)."""
    return _vit(192, 3, in_channels, image_size, patch_size, depth, drop_path, mlp_ratio)


@register_model("vit_small")
def vit_small(in_channels: int = 1, image_size: int = 48, patch_size: int | None = None, depth: int = 12,
              drop_path: float = 0.1, mlp_ratio: float = 4.0) -> VisionTransformer:
    """ViT-S: width 384, 6 heads (21.5 M params at 224 px)."""
    return _vit(384, 6, in_channels, image_size, patch_size, depth, drop_path, mlp_ratio)


@register_model("vit_base")
def vit_base(in_channels: int = 1, image_size: int = 48, patch_size: int | None = None, depth: int = 12,
             drop_path: float = 0.1, mlp_ratio: float = 4.0) -> VisionTransformer:
    """ViT-B: width 768, 12 heads (85.6 M params at 224 px)."""
    return _vit(768, 12, in_channels, image_size, patch_size, depth, drop_path, mlp_ratio)
