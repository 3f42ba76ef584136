"""Two CPU processes under torchrun (gloo) train the same model as one process with their combined batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

from ferkit.engine.checkpoint import load_checkpoint
from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer

from synthetic import write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_with_the_combined_batch(tmp_path, fer_csv):
    # A model without batch statistics (LayerNorm ViT, no dropout, no drop-path) and deterministic
    # preprocessing, so the only difference between the runs is who computes which half of a batch.
    # (BatchNorm normalises per process, as in DDP without SyncBatchNorm, which torch lacks on CPU.)
    sections = {
        "model": {"name": "vit_tiny", "options": {"depth": 1, "drop_path": 0.0, "dropout": 0.0}},
        "augment": {"train": "eval"},
        "optim": {"batch_size": 32, "lr": 1e-3, "name": "sgd"},
        "train": {"epochs": 1, "progress": False, "threads": 1, "device": "cpu", "amp": "off"},
    }
    cfg_path = write_config(tmp_path / "ddp.yaml", fer_csv, tmp_path / "runs", **sections)

    single = Trainer(load_config(cfg_path), run_dir=tmp_path / "single")
    single.fit()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "ferkit.cli", "train", str(cfg_path), "--run-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    one = single.method.state_dict()
    assert ddp["step"] == single.step == 8  # 280 rows // 32 per global batch
    assert set(ddp["method"]) == set(one)
    for key, value in ddp["method"].items():
        torch.testing.assert_close(value, one[key], rtol=1e-4, atol=1e-5, msg=key)
    # and the runs really trained: the weights moved away from the shared initialisation
    init = Trainer(load_config(cfg_path), run_dir=tmp_path / "init").method.state_dict()
    assert not torch.allclose(init["model.fc.weight"], one["model.fc.weight"])
    meta = (tmp_path / "ddp" / "meta.json").read_text()
    assert '"world_size": 2' in meta
