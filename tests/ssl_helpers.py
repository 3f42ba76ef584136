"""Helpers for the semi-supervised method tests: a method with the trainer's views, a tiny batch."""

from __future__ import annotations

import torch

from ferkit.augment import build_augment
from ferkit.engine.batches import make_view
from ferkit.methods import Method, get_method
from ferkit.models import build_model

from synthetic import synthetic_faces


def make_method(name: str, num_classes: int = 7, **cfg) -> Method:
    """The method on a compact model at 48 px gray, with the views the trainer would give it."""
    torch.manual_seed(0)
    model = build_model("compact", num_classes=num_classes, in_channels=1, image_size=48)
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"][:num_classes]
    m = get_method(name)(model, {"name": name, **cfg}, num_classes, {"classes": classes})
    m.views = {p: make_view(build_augment(p if p not in ("train",) else "weak", 48, 1), 0.5, 0.5)
               for p in ("train", "eval", "weak", "strong")}
    return m


def tiny_batch(n: int = 8, n_u: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A labelled + unlabelled batch of synthetic bar faces, as the trainer yields it."""
    images, labels = synthetic_faces(n + n_u, seed=seed)
    t = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels).long()
    return {"images": t[:n], "labels": y[:n], "index": torch.arange(n),
            "u_images": t[n:], "u_index": torch.arange(n_u), "u_labels": y[n:]}


def step_with(m: Method, batch: dict[str, torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one ``train_step`` from a fixed RNG state (views and dropout alike)."""
    torch.manual_seed(seed)
    m.zero_grad(set_to_none=True)
    loss, _ = m.train_step(batch)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def ssl_run_config(tmp_path, fer_csv, method: dict, epochs: int = 6, **train):
    """A tiny semi-supervised run: 70 labelled + 210 unlabelled synthetic rows, batch 16 + 32.

    The bars that encode the class are 6 px apart, so the weak view translates by at most 2 px
    here (its 12.5 % default would move a bar onto its neighbour's row and make the task noise).
    """
    from ferkit.engine.config import load_config

    from synthetic import write_config

    path = write_config(tmp_path / f"{method['name']}.yaml", fer_csv, tmp_path / "runs", method=method,
                        data={"dataset": "fer2013", "path": str(fer_csv), "options": {"cache": False},
                              "labelled": 70, "unlabelled_ratio": 2},
                        augment={"options": {"weak": {"translate": 0.04}}},
                        optim={"batch_size": 16, "lr": 3e-3}, train={"epochs": epochs, "ema": 0.9, **train})
    return load_config(path)
