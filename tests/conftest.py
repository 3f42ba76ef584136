import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache, so no test sees another's files."""
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fer_csv(tmp_path):
    from synthetic import write_fer2013_csv

    return write_fer2013_csv(tmp_path / "fer.csv")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast and far steadier on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
