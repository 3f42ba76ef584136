"""What the semi-supervised methods share: one forward over all views, hard pseudo labels, a
multi-view contrastive loss, and the pseudo-label precision / recall they all log.

Why shared: issue 9 compares Pseudo-Label, FixMatch and Ada-CM (and later MixMatch, ReMixMatch)
in one harness, so that only the objective differs: the same batches (``images`` labelled,
``u_images`` unlabelled, see :mod:`ferkit.engine.trainer`), the same views (the labelled rows go
through ``views["train"]`` as in ``ce``, so ``augment.train`` sets it for every method alike; the
unlabelled ones through ``views["weak"]`` / ``views["strong"]``), the same EMA and the same logs.

All views of a step go through the network in one concatenated batch, as FixMatch does, so
BatchNorm normalises labelled and unlabelled rows together.

Pseudo-label statistics (for the analyses of issue 9, never for a loss): the trainer passes the
true labels of the unlabelled rows as ``u_labels``; :meth:`SemiSupervised.count_pseudo_labels`
adds up, per class, how many pseudo labels fell above / below the method's threshold (or
Ada-CM's margin) and how many of them were right. The counts are int64 buffers, so they are
checkpointed and a resumed epoch reports what an uninterrupted one would. At the end of an
epoch :meth:`SemiSupervised.on_epoch_end` turns them into ``pl_above_precision`` (right / all
pseudo labels above), ``pl_above_recall`` (right pseudo labels above / unlabelled rows seen),
the same for ``below``, ``pl_above_fraction``, and per class ``.../<class>`` (a class's recall
is over the rows truly of that class), then resets them. Undefined values (nothing counted) are
None.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ferkit.engine import distributed as dist
from ferkit.methods.base import Method

# rows of the pl_counts buffer
_ABOVE, _ABOVE_OK, _BELOW, _BELOW_OK, _TRUE = range(5)


class SemiSupervised(Method):
    """Base of the semi-supervised methods (see the module docstring)."""

    uses_unlabelled: ClassVar[bool] = True

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        self.opts = {**self.defaults, **cfg}
        self.register_buffer("pl_counts", torch.zeros(5, num_classes, dtype=torch.long))

    # -- the network on several views at once ---------------------------------------------
    def forward_views(self, views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Logits and pooled features of each input batch, from one forward pass of their concatenation."""
        sizes = [v.shape[0] for v in views]
        emb = self.model.embed(torch.cat(views))
        logits = self.model.classify(emb)
        return list(logits.split(sizes)), list(emb.split(sizes))

    @staticmethod
    def supervised_loss(logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the labelled rows (rows labelled -1 ignored)."""
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)

    # -- pseudo-label statistics ----------------------------------------------------------
    @torch.no_grad()
    def count_pseudo_labels(self, pseudo: Tensor, above: Tensor, u_labels: Tensor | None) -> None:
        """Add one batch's pseudo labels to the epoch's counts (analysis only: nothing here reaches a loss)."""
        if u_labels is None:
            return
        valid = u_labels >= 0
        k = self.num_classes
        right = (pseudo == u_labels) & valid
        for row, sel in ((_ABOVE, above & valid), (_ABOVE_OK, above & right), (_BELOW, ~above & valid),
                         (_BELOW_OK, ~above & right)):
            self.pl_counts[row] += torch.bincount(pseudo[sel], minlength=k).to(self.pl_counts)
        self.pl_counts[_TRUE] += torch.bincount(u_labels[valid], minlength=k).to(self.pl_counts)

    def pseudo_label_report(self) -> dict[str, Any]:
        """Precision / recall of the pseudo labels above and below the threshold since the last
        report (summed over processes), then reset the counts."""
        counts = self.pl_counts.clone()
        if dist.is_distributed():
            torch.distributed.all_reduce(counts)
        self.pl_counts.zero_()
        counts = counts.double().cpu()
        if counts[_TRUE].sum() == 0:
            return {}
        names = list(self.info.get("classes") or range(self.num_classes))

        def ratio(a: Tensor, b: Tensor) -> float | None:
            return float(a / b) if float(b) > 0 else None

        true = counts[_TRUE]
        out: dict[str, Any] = {"pl_above_fraction": ratio(counts[_ABOVE].sum(), true.sum())}
        for part, n_row, ok_row in (("above", _ABOVE, _ABOVE_OK), ("below", _BELOW, _BELOW_OK)):
            n, ok = counts[n_row], counts[ok_row]
            out[f"pl_{part}_precision"] = ratio(ok.sum(), n.sum())
            out[f"pl_{part}_recall"] = ratio(ok.sum(), true.sum())
            for c, name in enumerate(names):
                out[f"pl_{part}_precision/{name}"] = ratio(ok[c], n[c])
                out[f"pl_{part}_recall/{name}"] = ratio(ok[c], true[c])
        return out

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:
        return self.pseudo_label_report()


def hard_pseudo_labels(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(confidence, class) of the softmax of ``logits``, detached: targets, never a gradient path."""
    conf, pseudo = logits.detach().float().softmax(1).max(1)
    return conf, pseudo


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor, reduction: str = "batch") -> Tensor:
    """Cross-entropy of the rows where ``mask`` is true. ``batch``: summed and divided by the batch
    size, as FixMatch does (rows below the threshold count as zeros); ``selected``: divided by the
    number of rows kept (at least 1)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none") * mask.float()
    if reduction == "batch":
        return ce.sum() / max(1, ce.shape[0])
    return ce.sum() / mask.float().sum().clamp_min(1)


def multiview_info_nce(features: Tensor, temperature: float) -> Tensor:
    """InfoNCE over views (SimCLR's NT-Xent, generalised to V views as SupCon without labels).

    ``features`` (N, V, D), L2-normalised. Every row-view is an anchor; its positives are the
    other views of the same row, everything else but itself is a negative:
    ``L = mean_a -1/|P(a)| sum_{p in P(a)} log(exp(z_a.z_p / t) / sum_{k != a} exp(z_a.z_k / t))``.
    0 (with a gradient path) when there are no rows or fewer than two views.
    """
    n, v, _ = features.shape
    if n == 0 or v < 2:
        return features.sum() * 0.0
    z = features.float().transpose(0, 1).reshape(v * n, -1)
    eye = torch.eye(v * n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    ids = torch.arange(n, device=z.device).repeat(v)
    pos = (ids[:, None] == ids[None, :]) & ~eye
    return -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1)).mean()
