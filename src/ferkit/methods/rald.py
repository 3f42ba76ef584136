"""RALD: relation-aware feature refinement and neighbour label distributions (seed 002).

For a batch of N images with backbone features ``F`` (N, D_v) and frozen text vectors ``S`` (C, 384)
of the label graph's nodes (fine labels first, then coarse; :mod:`ferkit.label_graphs`):

- **ITRR** (``itrr``): multi-head self-attention across the images of the batch -> ``F~``, and the
  image relation ``R_v`` (attention weights, mean over heads).
- **HLRR** (``hlrr``): self-attention over the label tokens with a learnable scalar bias per
  structure index ``xi`` (shortest-path distance in the graph, 0 on the diagonal, ``unconnected``
  = sigma = 500 otherwise) -> ``S~``. Flat label sets (``graph: null``, **RALD-L**) get no bias.
- **LGIFO** (``lgifo``): cross-attention, queries from ``F~``, keys ``S~ W_K``, values ``S~`` ->
  ``F^``; the fine classifier reads ``F^`` (without LGIFO: ``F~``, or ``F`` without ITRR too).
- **NNLDL** (``nnldl``): ``D_i`` = the ``k`` most related other images' predicted distributions,
  weighted by their relation; loss ``CE + kl_weight * L_KL`` with ``L_KL = -1/(N C_f) sum D log P``.

Every switch off = a plain classifier on the backbone (the ablation's baseline, Table 3 (a)).

**Batch independence** (``inference``): ITRR makes an image's output depend on its batch. With
``memory`` (the default) inference attends, for each image, to itself and a fixed bank of
``memory_size`` training features (eval view, refreshed at the end of every epoch from a seeded
random subset of the training split, and stored in the checkpoint), so a face gets the same
answer whatever else is in its batch. ``batch`` attends within the inference batch, as the
paper. Training always attends within the batch. A model without a bank (never trained through
the trainer) falls back to ``batch``.

Choices the paper leaves open (options, with these defaults):
- ``memory_size`` 127: one training batch of 128 minus the image itself, so the attention at
  inference sees as many tokens as in training.
- ``R_v`` for NNLDL is the softmax attention (mean of the heads), so the weights ``r_ij`` are
  positive; without ITRR the relation is the clamped cosine similarity of ``F``.
- ``D`` is a target: no gradient flows through the neighbours' predictions (``detach_target``).
- attention scale lambda = 1 / sqrt(head width) (``scale: null``), 0.125 for the paper's
  512-d features and 8 heads; FFN width ``ffn_mult`` x the token width; LayerNorm as ``norm``.
- the label tokens are the 384-d MiniLM sentence vectors of the node names (the paper: 300-d
  word2vec), frozen; the attention blocks work at their width. They are unit vectors, so
  ``standardize_labels`` scales each to zero mean and unit variance per dimension (a LayerNorm
  without parameters) before use: at unit norm the keys they give are too small for the image
  queries to move the attention off uniform early in training.
- ``residual``: post-norm transformer blocks with the usual skip connection (see
  :mod:`ferkit.models.rald`); ``false`` follows eqs. (7), (12) and (17) literally.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.label_graphs import flat_graph, get_label_graph, node_embeddings
from ferkit.methods.base import Method, masked_cross_entropy
from ferkit.methods.registry import register_method
from ferkit.models.rald import AttentionBlock, cosine_relation, neighbour_distribution


@register_method
class RALD(Method):
    name: ClassVar[str] = "rald"
    defaults: ClassVar[dict[str, Any]] = {
        "itrr": True,  # image-to-image relations across the batch
        "hlrr": True,  # label-to-label relations with the hierarchy bias
        "lgifo": True,  # image features refined by attention to the label features
        "nnldl": True,  # neighbour label distributions + KL term
        "graph": None,  # a registered label graph (fg-emotions, rafdb-compound, ferplus-valence); null = flat (RALD-L)
        "label_embeddings": None,  # .npz of label vectors (scripts/embed_labels.py); null = the shipped ones
        "heads": 8,
        "scale": None,  # lambda; null = 1 / sqrt(head width)
        "ffn_mult": 2.0,
        "residual": True,  # post-norm transformer blocks; false = eqs. (7), (12), (17) literally
        "standardize_labels": False,  # label vectors to zero mean, unit variance per token
        "unconnected": 500,  # sigma: xi of two labels with no path between them
        "k": 5,  # neighbours per image for NNLDL (the paper's best of 1, 3, 5, 7, 9)
        "kl_weight": 1.0,
        "kl_norm": "classes",  # classes: divide by N * C_f as eq. (19); samples: by N
        "detach_target": True,
        "inference": "memory",  # memory | batch
        "memory_size": 127,
        "memory_seed": 0,
        "label_smoothing": 0.0,
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        c = {**self.defaults, **cfg}
        self.itrr, self.hlrr, self.lgifo, self.nnldl = (bool(c[k]) for k in ("itrr", "hlrr", "lgifo", "nnldl"))
        if self.hlrr and not self.lgifo:  # HLRR refines the label features that only LGIFO uses
            raise ConfigError("method.hlrr needs method.lgifo: the label relations refine the label features "
                              "that LGIFO attends to (set hlrr: false, or lgifo: true)")
        if c["inference"] not in ("memory", "batch"):
            raise ConfigError(f"method.inference must be memory or batch, not {c['inference']!r}")
        if c["kl_norm"] not in ("classes", "samples"):
            raise ConfigError(f"method.kl_norm must be classes or samples, not {c['kl_norm']!r}")
        if int(c["k"]) < 1 or int(c["memory_size"]) < 0:
            raise ConfigError("method.k must be >= 1 and method.memory_size >= 0")
        self.inference = str(c["inference"])
        self.k, self.kl_weight, self.kl_norm = int(c["k"]), float(c["kl_weight"]), str(c["kl_norm"])
        self.detach_target, self.smoothing = bool(c["detach_target"]), float(c["label_smoothing"])
        self.memory_size, self.memory_seed = int(c["memory_size"]), int(c["memory_seed"])
        heads = int(c["heads"])
        block = {"ffn_mult": float(c["ffn_mult"]), "scale": c["scale"], "residual": bool(c["residual"])}
        self.standardize = bool(c["standardize_labels"])

        classes = (self.info or {}).get("classes")
        self.graph = self._graph(c["graph"], classes, num_classes)
        d_v = model.feature_dim
        emb = node_embeddings(self.graph, c["label_embeddings"]) if self.lgifo else np.zeros((0, 1), np.float32)
        self.register_buffer("labels_text", torch.from_numpy(emb))  # S, frozen (a buffer: no gradient)
        xi = self.graph.structure_index(int(c["unconnected"]))
        values, xi_index = np.unique(xi, return_inverse=True)
        self.register_buffer("xi_index", torch.from_numpy(xi_index.reshape(xi.shape).astype(np.int64)))
        self.structure_values = values.tolist()  # xi value of each bias scalar, for reports

        self.itrr_block = AttentionBlock(d_v, d_v, heads, **block) if self.itrr else None
        d_s = emb.shape[1]
        use_bias = self.graph.hierarchical
        self.hlrr_block = (AttentionBlock(d_s, d_s, heads, num_bias=len(values) if use_bias else 0, **block)
                           if self.lgifo and self.hlrr else None)
        self.lgifo_block = (AttentionBlock(d_v, d_s, heads, project_values=False, **block)
                            if self.lgifo else None)
        self.classifier = nn.Linear(d_s if self.lgifo else d_v, num_classes)
        #: training features for memory-mode inference; rows [0, memory_rows) are valid
        self.register_buffer("memory", torch.zeros(self.memory_size, d_v))
        self.register_buffer("memory_rows", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _graph(name: str | None, classes: list[str] | None, num_classes: int):
        if classes is None:  # built outside a trainer without class names: the canonical ones
            from ferkit.labels import label_set
            classes = list(label_set(num_classes))
        if name is None:
            return flat_graph(classes)
        return get_label_graph(str(name)).for_classes(classes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the bank, the label vectors and xi are as large as the run that saved them made them
        for key in ("memory", "labels_text", "xi_index"):
            if prefix + key in state_dict:
                setattr(self, key, torch.empty_like(state_dict[prefix + key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the forward pieces ------------------------------------------------------------------
    def label_features(self) -> Tensor:
        """``S~`` (C, D_s): HLRR over the label tokens, or the frozen vectors without HLRR."""
        s = self.labels_text
        if self.standardize:
            s = F.layer_norm(s, s.shape[-1:])
        if self.hlrr_block is None:
            return s
        return self.hlrr_block(s, s, self.xi_index)[0]

    def refine(self, feats: Tensor, mode: str) -> tuple[Tensor, Tensor | None]:
        """(features the classifier reads, image relation or None) for pooled backbone features."""
        relation = None
        x = feats
        if self.itrr_block is not None:
            if mode == "memory" and int(self.memory_rows) > 0:
                x = self.itrr_block.forward_memory(feats, self.memory[: int(self.memory_rows)])
            else:
                x, relation = self.itrr_block(feats, feats)
        if self.lgifo_block is not None:
            x = self.lgifo_block(x, self.label_features())[0]
        return x, relation

    def logits_and_relation(self, x: Tensor, mode: str) -> tuple[Tensor, Tensor | None, Tensor]:
        feats = self.model.embed(x)
        refined, relation = self.refine(feats, mode)
        return self.classifier(self.model.dropout(refined)), relation, feats

    # -- training --------------------------------------------------------------------------
    def kl_term(self, logits: Tensor, relation: Tensor) -> Tensor:
        """``-1/(N C_f) sum_i sum_c D_ic log P_ic`` (eq. 19; ``kl_norm: samples`` drops the 1/C_f)."""
        probs = logits.softmax(1)
        target = neighbour_distribution(relation, probs.detach() if self.detach_target else probs, self.k)
        total = -(target * F.log_softmax(logits, 1)).sum()
        return total / (logits.shape[0] * (logits.shape[1] if self.kl_norm == "classes" else 1))

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        labels = batch["labels"]
        logits, relation, feats = self.logits_and_relation(x, "batch")
        ce = masked_cross_entropy(logits, labels, self.smoothing)
        logs = {"ce": float(ce.detach())}
        loss = ce
        if self.nnldl:
            rel = relation if relation is not None else cosine_relation(feats.detach())
            kl = self.kl_term(logits, rel.detach())
            loss = loss + self.kl_weight * kl
            logs["kl"] = float(kl.detach())
        with torch.no_grad():
            logs["acc"] = float((logits.argmax(1) == labels).float().mean())
        logs["loss"] = float(loss.detach())
        return loss, logs

    @torch.no_grad()
    def set_memory(self, inputs: Tensor, batch_size: int = 256) -> None:
        """Fill the bank with the backbone features of normalised ``inputs`` (eval mode)."""
        was = self.training
        self.eval()
        feats = torch.cat([self.model.embed(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
        self.train(was)
        n = min(len(feats), self.memory_size)
        self.memory[:n] = feats[:n].to(self.memory.dtype)
        self.memory_rows.fill_(n)

    def memory_inputs(self) -> Tensor | None:
        """The eval-view inputs of the seeded training subset the bank is made from (None outside a trainer)."""
        data = self.labelled_data()
        if data is None or self.memory_size == 0 or self.itrr_block is None:
            return None
        images = data[0]
        rng = np.random.default_rng(self.memory_seed)
        idx = np.sort(rng.choice(len(images), size=min(self.memory_size, len(images)), replace=False))
        return self.views["eval"](images[torch.from_numpy(idx)].to(self.memory.device))

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:
        inputs = self.memory_inputs()
        if inputs is not None:
            self.set_memory(inputs)
            ema = self.ema_model()
            if ema is not None:  # the evaluated EMA copy gets a bank of its own features
                ema.set_memory(inputs)
        return {}

    # -- inference -------------------------------------------------------------------------
    def predict_logits(self, x: Tensor) -> Tensor:
        return self.logits_and_relation(x, self.inference)[0]

    def cam_weights(self) -> tuple[Tensor, Tensor]:
        raise ConfigError("class activation maps are not defined for RALD: its classifier reads attention "
                          "outputs, not a linear map of the pooled features")
