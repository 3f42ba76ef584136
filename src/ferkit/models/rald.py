"""RALD's attention blocks (seed 002, eqs. 3-17): one multi-head attention layer followed by
``norm(X_MSA + FFN(X_MSA))``, used three ways by :mod:`ferkit.methods.rald`:

- ITRR: images of a batch attend to each other (queries, keys and values from the same features);
  in memory mode each image attends to itself and a fixed bank of training features instead.
- HLRR: label tokens attend to each other with a learnable scalar bias per structure index
  ``xi(i, j)`` (shortest-path distance in the label graph, 0 on the diagonal, sigma otherwise).
- LGIFO: image features (queries) attend to label features (keys ``S~ W_K``, values ``S~`` itself).

Residual connection (``residual``): the paper's eqs. (7), (12) and (17) write a block's output as
``norm(X_MSA + FFN(X_MSA))`` of the attention result alone, so an image's own features reach the
classifier only through the weight it gives itself. With ``residual=True`` (ferkit's default) the
block is the usual post-norm transformer layer, ``x = norm1(P q + X_MSA)`` then
``norm(x + FFN(x))`` (``P`` a projection when the query and token widths differ). Taken literally
(``residual=False``), the full RALD stayed at chance (19 %) on the generated coarse/fine set of
tests/synthetic.py after 10 short epochs, where the residual form and the plain classifier both
reached 100 %.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError


class AttentionBlock(nn.Module):
    """Multi-head attention from ``q_dim`` queries to ``kv_dim`` keys/values, then add & norm with
    an FFN. ``project_values=False`` uses the key/value tokens themselves as values (LGIFO's
    ``V_s = S~``). ``scale`` is lambda of eq. (4); None = 1 / sqrt(head width) (0.125 for the
    paper's 512-d ResNet-18 features and 8 heads)."""

    def __init__(self, q_dim: int, kv_dim: int, heads: int, *, project_values: bool = True,
                 ffn_mult: float = 2.0, scale: float | None = None, num_bias: int = 0,
                 residual: bool = True) -> None:
        super().__init__()
        if kv_dim % heads:
            raise ConfigError(f"method.heads={heads} must divide the attention width {kv_dim}")
        self.heads, self.dim = heads, kv_dim
        self.head_dim = kv_dim // heads
        self.scale = float(scale) if scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(q_dim, kv_dim)
        self.k = nn.Linear(kv_dim, kv_dim)
        self.v = nn.Linear(kv_dim, kv_dim) if project_values else nn.Identity()
        self.out = nn.Linear(kv_dim, kv_dim)
        hidden = max(1, int(round(ffn_mult * kv_dim)))
        self.ffn = nn.Sequential(nn.Linear(kv_dim, hidden), nn.GELU(), nn.Linear(hidden, kv_dim))
        self.norm = nn.LayerNorm(kv_dim)
        self.residual = bool(residual)
        if self.residual:
            self.skip = nn.Linear(q_dim, kv_dim) if q_dim != kv_dim else nn.Identity()
            self.norm1 = nn.LayerNorm(kv_dim)
        #: one learnable scalar per structure index (HLRR's b_xi), shared by the heads
        self.bias = nn.Parameter(torch.zeros(num_bias)) if num_bias else None

    def _split(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], self.heads, self.head_dim).transpose(0, 1)  # (h, n, d)

    def _finish(self, mixed: Tensor, queries: Tensor) -> Tensor:
        x = self.out(mixed.transpose(0, 1).reshape(mixed.shape[1], self.dim))
        if self.residual:
            x = self.norm1(self.skip(queries) + x)
        return self.norm(x + self.ffn(x))

    def forward(self, queries: Tensor, tokens: Tensor, bias_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(output (n, dim), attention weights averaged over heads (n, m)) for ``queries`` (n, q_dim)
        attending to ``tokens`` (m, kv_dim); ``bias_index`` (n, m) picks a ``bias`` per pair."""
        q, k, v = self._split(self.q(queries)), self._split(self.k(tokens)), self._split(self.v(tokens))
        logits = self.scale * q @ k.transpose(1, 2)  # (h, n, m)
        if bias_index is not None and self.bias is not None:
            logits = logits + self.bias[bias_index]
        attn = logits.softmax(-1)
        return self._finish(attn @ v, queries), attn.mean(0)

    def forward_memory(self, queries: Tensor, memory: Tensor) -> Tensor:
        """Self-attention where each query attends to itself and to the ``memory`` rows (m, dim)
        only, never to the other queries: a row's output does not depend on the rest of its batch."""
        q, k, v = self._split(self.q(queries)), self._split(self.k(queries)), self._split(self.v(queries))
        km, vm = self._split(self.k(memory)), self._split(self.v(memory))
        own = self.scale * (q * k).sum(-1, keepdim=True)  # (h, n, 1)
        logits = torch.cat([own, self.scale * q @ km.transpose(1, 2)], dim=-1)  # (h, n, 1 + m)
        attn = logits.softmax(-1)
        mixed = attn[..., :1] * v + attn[..., 1:] @ vm
        return self._finish(mixed, queries)


def neighbour_distribution(relation: Tensor, probs: Tensor, k: int) -> Tensor:
    """NNLDL's label distributions (seed 002 eq. 18): for each row i, the ``k`` other rows j with
    the largest ``relation[i, j]`` (>= 0), ``D_i = sum_j r_ij P_j / sum_j r_ij``. (n, C)."""
    n = relation.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return probs
    r = relation.masked_fill(torch.eye(n, dtype=torch.bool, device=relation.device), float("-inf"))
    weights, idx = r.topk(k, dim=1)
    weights = weights.clamp_min(0)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    return (weights.unsqueeze(-1) * probs[idx]).sum(1)


def cosine_relation(feats: Tensor) -> Tensor:
    """Cosine similarity clamped at 0: the relation NNLDL uses when ITRR (and so R_v) is off."""
    f = F.normalize(feats, dim=1)
    return (f @ f.T).clamp_min(0)
