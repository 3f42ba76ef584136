"""The model every method trains: a backbone, global pooling, dropout and one linear classifier.

Methods need more than logits (EAC's class activation maps need the spatial features, APSM
and SCN need the pooled embedding with the classifier applied separately), so the pieces are
exposed one by one: ``feature_map`` -> ``embed`` -> ``classify``. ``forward`` is exactly
``classify(embed(x))``. A backbone only has to implement :class:`Backbone`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Backbone(nn.Module):
    """Feature extractor interface.

    ``forward_features(x)`` returns the backbone's raw output once; ``feature_map`` and ``pool``
    turn that raw output into a spatial map (B, C, h, w) and a pooled vector (B, feature_dim),
    so a caller that needs both runs the network only once. CNNs return the map itself and
    average-pool it; ViTs return the token sequence and use the cls token as the embedding.
    """

    feature_dim: int
    #: dropout before the classifier when the caller does not choose one
    default_dropout: float = 0.0
    #: resolved constructor options (``stem="auto"`` stored as what it resolved to)
    options: dict[str, Any]

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    #: channels of the frozen blocks' output, which ``forward_features`` also accepts in place of
    #: images (0: this backbone has no frozen trunk to cache; see ``train.cache_frozen``)
    trunk_channels: int = 0

    def trunk(self, x: Tensor) -> Tensor:
        """The frozen blocks' output for an image batch (backbones with ``trunk_channels`` > 0)."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen trunk to cache")

    def feature_map(self, feats: Tensor) -> Tensor:
        return feats

    def pool(self, feats: Tensor) -> Tensor:
        return feats.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x))


class FERModel(nn.Module):
    """Backbone + global pooling + dropout + ``fc`` (``nn.Linear(feature_dim, num_classes)``).

    Input: a float batch (B, in_channels, H, W), already normalised by the caller (see
    :func:`ferkit.augment.normalize`). ``config()`` holds everything ``build_model(**cfg)``
    needs to rebuild the same architecture, which is what checkpoints store.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        name: str,
        in_channels: int,
        image_size: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.feature_dim = int(backbone.feature_dim)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else nn.Identity()
        self.fc = nn.Linear(self.feature_dim, self.num_classes)

    # -- the pieces methods combine -------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """Pooled features (B, feature_dim), before dropout and the classifier."""
        return self.backbone.pool(self.backbone.forward_features(x))

    def feature_map(self, x: Tensor) -> Tensor:
        """Spatial features (B, C, h, w) before pooling (ViT: patch tokens on their grid)."""
        return self.backbone.feature_map(self.backbone.forward_features(x))

    def classify(self, emb: Tensor) -> Tensor:
        """Logits from pooled features: dropout (training only) then ``fc``."""
        return self.fc(self.dropout(emb))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.embed(x))

    def extract(self, x: Tensor) -> dict[str, Tensor]:
        """One pass giving ``feature_map``, ``embedding`` and ``logits`` (for CAM-based methods)."""
        feats = self.backbone.forward_features(x)
        emb = self.backbone.pool(feats)
        return {"feature_map": self.backbone.feature_map(feats), "embedding": emb, "logits": self.classify(emb)}

    # -- bookkeeping ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Keywords for ``build_model(**cfg)`` that rebuild this architecture."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "dropout": self.dropout_p,
            **dict(self.backbone.options),
        }

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, image_size={self.image_size}"


def init_weights(module: nn.Module) -> None:
    """He init for convs, unit BN / LayerNorm, small normal for linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
