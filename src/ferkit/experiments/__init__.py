"""Grid experiments (a paper table: a grid of runs, resumable cell by cell, with its table and plots).

``ferkit experiment CONFIG.yaml`` / :func:`run_experiment` read one experiment YAML; its ``kind``
picks the module that knows its cells and its table: ``ablation`` (a grid of run configs, the
APSM / RALD / pretrained ablations), ``analyses`` (uncertainty analyses of trained runs), ``noise``
(methods x label-noise rates), ``ssl`` (semi-supervised methods x seeds, one label budget) and
``cross_dataset`` (trained models x datasets). The shared machinery (reading the config, expanding
and selecting cells, run directories, skipping finished cells, refusing a changed config, the
results folder and the commit) lives in :mod:`ferkit.experiments.core`; a new kind is a class
registered with :func:`register_kind`.
"""

from __future__ import annotations

from typing import Any

from ferkit.errors import ConfigError
from ferkit.registry import add_unique

#: experiment kind name -> its class (see ferkit.experiments.core.ExperimentKind)
KINDS: dict[str, Any] = {}


def register_kind(cls: type) -> type:
    """Class decorator: make ``cls`` the runner of the experiment configs whose ``kind`` is ``cls.name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a name")
    return add_unique(KINDS, cls.name, cls, "experiment kind")


def get_kind(name: str) -> type:
    """The class of an experiment kind, built-in kinds loaded on first use."""
    _load_builtin()
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment kind {name!r} (known: {', '.join(sorted(KINDS))})") from None


def list_kinds() -> list[str]:
    """The registered kinds (what an experiment config's ``kind`` may say)."""
    _load_builtin()
    return sorted(KINDS)


def _load_builtin() -> None:
    from ferkit.experiments import ablation, analyses, cross_dataset, noise, ssl  # noqa: F401  (each registers itself)


from ferkit.experiments.core import (  # noqa: E402  (the core looks kinds up through get_kind above)
    DIRTY_MARK,
    environment,
    load_experiment,
    mark_tree_state,
    open_experiment,
    run_experiment,
)

__all__ = ["DIRTY_MARK", "KINDS", "environment", "get_kind", "list_kinds", "load_experiment", "mark_tree_state",
           "open_experiment", "register_kind", "run_experiment"]
