"""Data-parallel training with torch.distributed (torchrun; gloo on CPU, nccl on CUDA).

Each process takes its share of every global batch, and after ``backward`` the gradients of all
trainable parameters are averaged over processes in one flattened all-reduce. That is what
DistributedDataParallel does, done once here outside the methods, so a method may call its
model any number of times per step (two views, extra heads) without DDP's forward wrapper.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(
        os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    rank, _, world = env_world()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return rank, world


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (start from the same model)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_reduce_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module`` over all processes (one flattened all-reduce)."""
    if not is_distributed():
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:  # a parameter unused in this step still takes part, with a zero gradient
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over processes (for logging)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
