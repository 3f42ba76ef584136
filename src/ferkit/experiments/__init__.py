"""Grid experiments (a paper table: a grid of runs, resumable cell by cell, with its table and plots).

``ferkit experiment CONFIG.yaml`` / :func:`run_experiment` read one experiment YAML; its ``kind``
picks the module that knows its cells and its table: ``ablation`` (a grid of run configs, the
APSM / RALD / pretrained ablations), ``analyses`` (uncertainty analyses of trained runs), ``noise``
(methods x label-noise rates), ``ssl`` (semi-supervised methods x seeds, one label budget) and
``cross_dataset`` (trained models x datasets). The shared machinery (reading the config, expanding
and selecting cells, run directories, skipping finished cells, refusing a changed config, the
results folder and the commit) lives in :mod:`ferkit.experiments.core`; a new kind is a class
registered with :func:`~ferkit.experiments.registry.register_kind`.
"""

from __future__ import annotations

from ferkit.experiments import ablation, analyses, cross_dataset, noise, ssl  # noqa: F401  (each registers itself)
from ferkit.experiments.core import (
    DIRTY_MARK,
    environment,
    load_experiment,
    mark_tree_state,
    open_experiment,
    run_experiment,
)
from ferkit.experiments.registry import KINDS, get_kind, list_kinds, register_kind

__all__ = ["DIRTY_MARK", "KINDS", "environment", "get_kind", "list_kinds", "load_experiment", "mark_tree_state",
           "open_experiment", "register_kind", "run_experiment"]
