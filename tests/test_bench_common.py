"""Benchmark results from a dirty work tree are marked as such, and a clean rerun clears the mark."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import DIRTY_MARK, mark_tree_state  # noqa: E402


def test_dirty_tree_marks_results_and_clean_rerun_clears(tmp_path, capsys):
    assert mark_tree_state(tmp_path, {"git_dirty": True, "git_commit": "abc123"}) is True
    text = (tmp_path / DIRTY_MARK).read_text()
    assert "abc123" in text and "uncommitted" in text
    assert "WARNING" in capsys.readouterr().err
    assert mark_tree_state(tmp_path, {"git_dirty": False, "git_commit": "def456"}) is False
    assert not (tmp_path / DIRTY_MARK).exists()
