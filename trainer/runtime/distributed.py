"""Where a training process runs: its rank and device under torchrun (nccl/gloo), its share of CPU threads, sums over ranks."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from trainer.config import TrainConfig


def setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: one process per GPU (nccl) or per CPU slot (gloo)."""
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def configure_cpu_threads(cfg: TrainConfig, world: int = 1) -> int:
    """Give each process its share of the cores, minus its loader workers.

    Oversubscribed OpenMP threads spin against the workers (and any neighbour): on a 2-core box,
    2 torch threads + 1 worker trained ~10x slower than 1 thread + 1 worker.
    """
    n = cfg.cpu_threads or max(1, (os.cpu_count() or 1) // world - cfg.num_workers)
    torch.set_num_threads(n)
    return n


AUTO_GPU_WORKERS = 8  # at most, per process: one worker gives 1,300-1,800 examples/s at BERT-base sizes (make bench), an H200 trains ~7,000


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def loader_workers(cfg: TrainConfig, device: torch.device, local_world: int = 1) -> int:
    """This process's loader worker processes: ``--num-workers`` as given, or for -1 (auto) 2 on a CPU (the
    model is the bottleneck there, and each worker takes a core from it) and, on a GPU, the process's share
    of this machine's cores less one for itself, at most :data:`AUTO_GPU_WORKERS`. Two, the old default,
    fed a GPU at most ~3,600 examples/s against the ~7,000 samples/s a compiled BERT-base trains on an H200."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    if device.type != "cuda":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(AUTO_GPU_WORKERS, cores // max(1, local_world) - 1))


def enable_tf32() -> None:
    """TF32 matmuls and convolutions on the GPU (the float32 LSTM of the grounding head)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def total_skips(mine: dict[str, int]) -> dict[str, int]:
    """Sum the skip counters of every rank (each rank reads different shards)."""
    if not dist.is_initialized():
        return dict(mine)
    gathered: list[dict[str, int]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, dict(mine))
    total: dict[str, int] = {}
    for d in gathered:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total
