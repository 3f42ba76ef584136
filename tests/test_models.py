"""Backbones, the FERModel surface, the registry and loading torchvision-format weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ferkit.errors import ConfigError, InputError
from ferkit.models import (
    MODELS,
    Backbone,
    FERModel,
    build_model,
    list_backbones,
    load_pretrained,
    register_model,
)
from ferkit.models.vit import default_patch_size

pytestmark = pytest.mark.usefixtures("one_thread")


# (name, image_size, options, expected feature-map side); small/cheap settings only
CASES = [
    ("compact", 48, {}, 3),
    ("compact", 64, {}, 4),
    ("compact_wide", 48, {}, 3),
    ("resnet18", 32, {}, 4),  # auto -> small stem: stride 8
    ("resnet18", 64, {"stem": "imagenet", "width": 0.25}, 2),  # stride 32
    ("resnet34", 32, {"width": 0.25}, 4),
    ("resnet50", 32, {"width": 0.25}, 4),
    ("vit_tiny", 48, {}, 12),  # patch 4 -> 12x12 grid
    ("vit_small", 48, {"depth": 1}, 12),
    ("vit_base", 32, {"depth": 1, "patch_size": 8}, 4),
]


def test_registry_lists_all_backbones() -> None:
    names = list_backbones()
    for n in ("resnet18", "resnet34", "resnet50", "compact", "compact_wide", "vit_tiny", "vit_small", "vit_base"):
        assert n in names
    assert names == sorted(MODELS)


def test_unknown_model_and_option_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("resnet19", 7)
    with pytest.raises(ConfigError, match="stem"):
        build_model("resnet18", 7, stems="small")
    with pytest.raises(ConfigError):
        build_model("resnet18", 7, in_channels=2)
    with pytest.raises(ConfigError):
        build_model("resnet18", 7, stem="huge")
    with pytest.raises(ConfigError, match="multiple"):
        build_model("vit_tiny", 7, image_size=50, patch_size=4)


@pytest.mark.parametrize("name,size,opts,side", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_consistency(name: str, size: int, opts: dict, side: int, channels: int) -> None:
    torch.manual_seed(0)
    m = build_model(name, 7, in_channels=channels, image_size=size, **opts).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits = m(x)
        emb = m.embed(x)
        fmap = m.feature_map(x)
        out = m.extract(x)
    assert logits.shape == (2, 7)
    assert emb.shape == (2, m.feature_dim)
    assert fmap.shape == (2, m.feature_dim, side, side)
    assert isinstance(m.fc, torch.nn.Linear) and m.fc.in_features == m.feature_dim
    torch.testing.assert_close(m.classify(emb), logits)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(out["feature_map"], fmap)
    if not name.startswith("vit"):  # CNNs: embedding = average of the map
        torch.testing.assert_close(fmap.mean(dim=(2, 3)), emb, rtol=1e-4, atol=1e-5)


def test_resnet_stems() -> None:
    small = build_model("resnet18", 7, image_size=48)
    big = build_model("resnet18", 7, image_size=224)
    assert small.config()["stem"] == "small" and small.backbone.conv1.kernel_size == (3, 3)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)
    assert big.config()["stem"] == "imagenet" and big.backbone.conv1.kernel_size == (7, 7)
    assert build_model("resnet50", 7, image_size=48).feature_dim == 2048
    # 48 px with the small stem still leaves a 6x6 map at layer4
    with torch.no_grad():
        assert small.eval().feature_map(torch.zeros(1, 1, 48, 48)).shape[-2:] == (6, 6)


def test_torchvision_parameter_names() -> None:
    keys = set(build_model("resnet18", 1000, in_channels=3, image_size=224).state_dict())
    for k in ("backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.0.conv1.weight",
              "backbone.layer2.0.downsample.0.weight", "backbone.layer2.0.downsample.1.weight",
              "backbone.layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert k in keys
    keys50 = set(build_model("resnet50", 10, width=0.25).state_dict())
    assert "backbone.layer3.5.conv3.weight" in keys50 and "backbone.layer1.0.downsample.0.weight" in keys50


def test_vit_patch_size_rule() -> None:
    assert default_patch_size(48) == 4
    assert default_patch_size(96) == 8
    assert default_patch_size(64) == 4
    assert default_patch_size(112) == 16
    assert default_patch_size(224) == 16
    m = build_model("vit_small", 7, image_size=48, depth=1)
    assert m.feature_dim == 384 and m.config()["patch_size"] == 4
    assert m.backbone.pos_embed.shape == (1, 1 + 144, 384)
    assert build_model("vit_base", 7, image_size=32, depth=1, patch_size=8).feature_dim == 768


def test_config_round_trip() -> None:
    for name, size, opts in [("compact", 48, {}), ("resnet18", 64, {"stem": "imagenet", "width": 0.5}),
                             ("vit_tiny", 32, {"depth": 2})]:
        m = build_model(name, 5, in_channels=1, image_size=size, dropout=0.1, **opts).eval()
        cfg = m.config()
        assert cfg["name"] == name and cfg["num_classes"] == 5 and cfg["image_size"] == size
        m2 = build_model(**cfg).eval()
        assert m2.config() == cfg
        m2.load_state_dict(m.state_dict())
        x = torch.randn(2, 1, size, size)
        with torch.no_grad():
            torch.testing.assert_close(m(x), m2(x))


def test_dropout_default_and_override() -> None:
    assert build_model("compact", 7).dropout_p == pytest.approx(0.2)
    assert build_model("resnet18", 7, width=0.25).dropout_p == 0.0
    assert build_model("compact", 7, dropout=0.0).config()["dropout"] == 0.0
    with pytest.raises(ConfigError):
        build_model("compact", 7, dropout=1.5)


def test_register_model_adds_a_backbone() -> None:
    class Tiny(Backbone):
        def __init__(self, in_channels: int, width: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, width, 3, 2, 1)
            self.feature_dim = width

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    @register_model("_test_tiny")
    def _test_tiny(in_channels: int = 1, image_size: int = 48, width: int = 8) -> Tiny:
        net = Tiny(in_channels, width)
        net.options = {"width": width}
        return net

    try:
        m = build_model("_test_tiny", 3, width=4)
        assert m(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
        assert build_model(**m.config()).feature_dim == 4
    finally:
        MODELS.pop("_test_tiny")


@pytest.mark.parametrize("name,opts", [("compact", {}), ("vit_tiny", {"depth": 2, "drop_path": 0.0, "patch_size": 4})])
def test_gradient_steps_reduce_loss(name: str, opts: dict) -> None:
    torch.manual_seed(0)
    m = build_model(name, 4, image_size=16 if name == "vit_tiny" else 48, dropout=0.0, **opts)
    size = m.image_size
    x, y = torch.randn(16, 1, size, size), torch.arange(16) % 4
    opt = torch.optim.Adam(m.parameters(), lr=3e-4 if name.startswith("vit") else 1e-3)
    m.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


# -- load_pretrained ---------------------------------------------------------------------------
def _torchvision_file(tmp_path, **kw) -> tuple[str, dict]:
    """A torchvision-format ResNet-18 state dict (1000 classes, 3 ch, 7x7 stem) saved DataParallel-style."""
    torch.manual_seed(1)
    src = build_model("resnet18", 1000, in_channels=3, image_size=224, **kw)
    tv = {k.removeprefix("backbone."): v for k, v in src.state_dict().items()}  # torchvision names
    path = tmp_path / "ms_celeb_r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv.items()}, "epoch": 40}, path)
    return str(path), tv


def test_load_pretrained_into_small_gray_model(tmp_path) -> None:
    path, tv = _torchvision_file(tmp_path)
    model = build_model("resnet18", 7, in_channels=1, image_size=48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path)
    own = model.state_dict()
    # 7x7 conv1 cannot go into the 3x3 stem; the 1000-class fc does not fit 7 classes
    assert set(report["skipped"]) == {"module.conv1.weight", "module.fc.weight", "module.fc.bias"}
    assert "kernel" in report["skipped"]["module.conv1.weight"]
    assert set(report["missing"]) == {"backbone.conv1.weight", "fc.weight", "fc.bias"}
    assert len(report["loaded"]) == len(own) - 3
    for k, v in tv.items():
        if k in ("conv1.weight", "fc.weight", "fc.bias"):
            continue
        torch.testing.assert_close(own["backbone." + k], v, rtol=0, atol=0)
    torch.testing.assert_close(own["backbone.conv1.weight"], before["backbone.conv1.weight"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(2, 1, 48, 48))).all()


def test_load_pretrained_adapts_rgb_conv1_to_gray(tmp_path) -> None:
    path, tv = _torchvision_file(tmp_path)
    model = build_model("resnet18", 1000, in_channels=1, image_size=224)  # same stem, same classes
    report = load_pretrained(model, path, strict=True)
    assert report["missing"] == [] and report["skipped"] == {}
    assert "backbone.conv1.weight" in report["adapted"]
    torch.testing.assert_close(model.state_dict()["backbone.conv1.weight"], tv["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.fc.weight.detach(), tv["fc.weight"])


def test_load_pretrained_plain_and_prefixed_dicts(tmp_path) -> None:
    _, tv = _torchvision_file(tmp_path)
    for i, obj in enumerate([tv, {"model": {"backbone." + k: v for k, v in tv.items()}},
                             {"encoder." + k: v for k, v in tv.items()}]):
        p = tmp_path / f"w{i}.pt"
        torch.save(obj, p)
        report = load_pretrained(build_model("resnet18", 1000, in_channels=3, image_size=224), p, strict=True)
        assert not report["missing"]


def test_load_pretrained_errors(tmp_path) -> None:
    model = build_model("resnet18", 7, width=0.25)
    with pytest.raises(InputError, match="not found"):
        load_pretrained(model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        load_pretrained(model, bad)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.blocks.0.weight": torch.zeros(3)}}, other)
    with pytest.raises(InputError, match="no tensor"):
        load_pretrained(model, other)
    path, _ = _torchvision_file(tmp_path)
    with pytest.raises(InputError, match="do not fit"):
        load_pretrained(build_model("resnet18", 7, image_size=48), path, strict=True)


def test_fermodel_is_exported() -> None:
    assert isinstance(build_model("compact", 7), FERModel)
