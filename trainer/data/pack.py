"""A batch's tensors in one shared-memory buffer on their way from a loader worker to the training loop.

A DataLoader worker hands each tensor of a batch to the main process as a shared-memory segment of
its own: one file descriptor passed over a socket, with an authentication round trip, per tensor.
With ~17 tensors a batch, receiving one of 512 took the main process 11-16 ms, and a thread receiving
batches (the pin-memory thread, on a GPU node) cost the thread beside it 17-19 ms of work per batch
through the GIL (``make bench``: ``loader_main_ms_per_batch_b512_*``,
``loader_main_thread_ms_lost_per_batch_b512_*``). Packed, a batch is one segment, one descriptor, one
pinned copy, about 2 ms; :func:`unpack` gives the same tensors back as views of it, and ``to_device``
copies each view as before.

Whoever drops a shared segment last frees its pages: ~9 ms for a batch of 512 (92 MB), which in the
main process falls in the pin-memory thread with the GIL held. :class:`Handover` keeps a worker's
last few segments referenced in the worker, so the worker frees them after the main process is done
with them: up to ``PREFETCH + 2`` batches per worker in /dev/shm.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch

ALIGN = 64  # bytes: every view starts aligned for any dtype (and for vectorised copies)
PACKED, LAYOUT = "_packed", "_layout"


def _tensors(batch: dict[str, Any], path: tuple = ()) -> list[tuple[tuple, torch.Tensor]]:
    """(path, tensor) of every tensor in the batch, nested dicts (a μ-VLA batch's parts) included."""
    found = []
    for k, v in batch.items():
        if torch.is_tensor(v):
            found.append(((*path, k), v))
        elif isinstance(v, dict):
            found += _tensors(v, (*path, k))
    return found


def _without_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_tensors(v) if isinstance(v, dict) else v for k, v in batch.items() if not torch.is_tensor(v)}


def pack(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its tensors moved into one buffer in shared memory (a batch without tensors as it is)."""
    tensors = _tensors(batch)
    if not tensors:
        return batch
    layout, offset, placed = [], 0, {}  # placed: id(tensor) -> (offset, tensor), so a tensor in two parts is stored once
    for path, t in tensors:
        if id(t) not in placed:
            placed[id(t)] = (offset, t)
            offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        layout.append((path, str(t.dtype).removeprefix("torch."), tuple(t.shape), placed[id(t)][0]))
    # Allocated in shared memory here, so handing it over copies nothing more.
    buf = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(max(offset, 1)))
    for off, t in placed.values():
        _view(buf, str(t.dtype).removeprefix("torch."), tuple(t.shape), off).copy_(t)
    return {**_without_tensors(batch), PACKED: buf, LAYOUT: layout}


def unpack(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch :func:`pack` was given: every tensor a view of the one buffer (pinned if it was pinned)."""
    if PACKED not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k not in (PACKED, LAYOUT)}
    for path, dtype, shape, off in batch[LAYOUT]:
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _view(batch[PACKED], dtype, shape, off)
    return out


def _view(buf: torch.Tensor, dtype: str, shape: tuple, offset: int) -> torch.Tensor:
    dt = getattr(torch, dtype)
    return buf[offset:offset + math.prod(shape) * dt.itemsize].view(dt).view(shape)


class Handover:
    """A loader worker's last step: :func:`pack` each batch and keep the last ``keep`` buffers referenced
    here, so that the worker, not the main process, frees their pages (``keep`` > the batches in flight)."""

    def __init__(self, keep: int):
        self.kept: deque[torch.Tensor] = deque(maxlen=keep)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = pack(batch)
        if PACKED in batch:
            self.kept.append(batch[PACKED])
        return batch
