"""Temperature scaling (Guo et al. 2017): one scalar T that makes a classifier's confidence honest.

Why a scalar: it leaves every prediction's ranking, hence accuracy, unchanged, and fits on a few
thousand held-out faces without overfitting. Fit it on faces the model never trained on (a
``data.holdout`` split of Training), never on the split it is reported on.

``fit_temperature`` takes one or more logit *views* of the same faces (a face and its mirror
image, when the model averages them at inference) and minimises the negative log-likelihood of
the averaged softmax, i.e. of the probabilities the model will really output.
``fold_temperature`` writes 1/T into the classifier layer, so every engine (torch, ONNX export,
the Recognizer) outputs the calibrated probabilities with no extra code path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ferkit.errors import ConfigError
from ferkit.methods import Method


def _nll(views: Sequence[np.ndarray], labels: np.ndarray, t: float) -> float:
    probs = np.zeros_like(views[0], dtype=np.float64)
    for z in views:
        z = z.astype(np.float64) / t
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        probs += e / e.sum(1, keepdims=True)
    probs /= len(views)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(views: np.ndarray | Sequence[np.ndarray], labels: np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0), iters: int = 80) -> float:
    """The T in ``bounds`` minimising the NLL of ``mean_v softmax(logits_v / T)``.

    Golden-section search on log T (the NLL is unimodal in T for one view and in practice for
    a face and its mirror); ``iters`` steps shrink the bracket by 0.618 each (80: ~1e-16).
    """
    views = [views] if isinstance(views, np.ndarray) else list(views)
    labels = np.asarray(labels, np.int64)
    if not views or any(v.shape != views[0].shape or v.ndim != 2 for v in views) or len(labels) != len(views[0]):
        raise ConfigError("fit_temperature needs logit arrays (N, K) of equal shape and N labels")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(views, labels, np.exp(a)), _nll(views, labels, np.exp(b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(views, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(views, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


@torch.no_grad()
def fold_temperature(method: Method, temperature: float) -> None:
    """Divide the final classifier's weights and bias by ``temperature`` (exact temperature scaling).

    Only for methods whose inference logits are the model's ``fc`` output (``Method.predict_logits``
    not overridden: ce and the other single-head methods); others raise ConfigError.
    """
    if type(method).predict_logits is not Method.predict_logits:
        raise ConfigError(f"method '{getattr(method, 'name', type(method).__name__)}' has its own inference head: "
                          "temperature folding supports methods whose logits are the model's fc output")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    fc: nn.Linear = method.model.fc
    fc.weight.div_(float(temperature))
    fc.bias.div_(float(temperature))
