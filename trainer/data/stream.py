"""This rank's endless batch stream and its data position: what a checkpoint stores to resume every loader worker exactly."""
from __future__ import annotations

import logging
import re
import shutil

import torch

from trainer.config import TrainConfig
from trainer.data.chain import PREFETCH, EndlessStreams
from trainer.data.pack import PACKED, unpack
from trainer.data.shard_set import nonempty_region_shards

log = logging.getLogger("trainer.data.stream")


class BatchStream:
    """This rank's batches, epoch after epoch, from loader workers that live as long as the run.

    Each logical worker streams its own shards forever (``trainer.data.chain.EndlessStreams``), so there
    is no stall at epoch boundaries and no rank ever runs out: no collective is needed per batch.
    The data position is each worker's (epoch, items taken) plus whose turn is next; a checkpoint
    stores it and a resumed stream continues every worker exactly there.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, position: dict | None = None, rank: int = 0, world: int = 1,
                 pin_memory: bool = False):
        self.cfg = cfg
        shards = nonempty_region_shards(cfg.regions)
        per_rank = len(shards) // world
        if per_rank < 1:
            raise ValueError(f"{cfg.regions}: {len(shards)} non-empty region shards cannot feed {world} ranks; write at least one per rank")
        # A worker without shards would stream nothing forever: never start more than there are shards.
        workers = max(1, min(cfg.num_workers, per_rank))
        if cfg.num_workers > per_rank:
            log.warning("%d non-empty shards for %d ranks x %d workers: using %d workers per rank", len(shards), world, cfg.num_workers, workers)
        if position is not None and len(position["positions"]) != workers:
            log.warning("resuming with %d loader workers per rank, checkpoint had %d: the data order will differ",
                        workers, len(position["positions"]))
            start = min(position["positions"])[0]
            position = {"positions": [[start, 0] for _ in range(workers)], "turn": 0}
        position = position or {"positions": [[0, 0] for _ in range(workers)], "turn": 0}
        self.positions = [list(p) for p in position["positions"]]
        self.turn = int(position["turn"])
        self.epoch = min(e for e, _ in self.positions)
        self.skips: dict[str, int] = {}
        ds = EndlessStreams(cfg, tokenizer, shards, rank, world, self.positions, self.turn)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=workers if cfg.num_workers > 0 else 0,
            prefetch_factor=PREFETCH if cfg.num_workers > 0 else None, pin_memory=pin_memory,
        )
        self._it = iter(self.loader)
        self._shm_checked = cfg.num_workers == 0  # in process: no shared memory

    def position(self) -> dict:
        return {"positions": [list(p) for p in self.positions], "turn": self.turn}

    def next(self) -> dict:
        """The next batch with examples; raises when every worker went through whole epochs yielding none."""
        workers = len(self.positions)
        idle = [0] * workers  # epoch ends per worker since the last batch with examples
        while True:
            try:
                item = next(self._it)
                if not self._shm_checked and PACKED in item:
                    self._shm_checked = True
                    check_shared_memory(item[PACKED].numel(), workers)
                item = unpack(item)
            except (ValueError, OSError) as e:  # bad input (DataError, ShardError, a missing file): one line
                msg = worker_error_message(e)
                if msg == str(e):  # raised here, not by a worker: as it is
                    raise
                raise type(e)(msg) from None  # the DataLoader built this type from one message too
            w = item.pop("worker")
            assert w == self.turn, f"loader worker {w} answered out of turn (expected {self.turn})"
            self.positions[w] = [item["epoch"], item.pop("index") + 1]
            self.turn = (self.turn + 1) % workers
            for k, v in item["skips"].items():
                self.skips[k] = self.skips.get(k, 0) + int(v)
            if item["n"]:
                self.epoch = item["epoch"]
                return item
            if item.get("end"):
                idle[w] += 1
                # Two ends: each worker has gone through one whole epoch of its shards with nothing to give.
                if min(idle) >= 2:
                    raise RuntimeError(
                        f"a whole epoch of {self.cfg.regions} + {self.cfg.labels} yielded no training examples "
                        f"(dropped so far: {self.skips or 'nothing'})"
                    )

    def close(self) -> None:
        self._it = None  # shuts the workers down


def check_shared_memory(batch_bytes: int, workers: int, shm: str = "/dev/shm") -> bool:
    """Warn, once, when ``shm`` is smaller than the batches the loader workers keep there (each worker: the
    batches it prefetches plus the two it holds, :class:`trainer.data.pack.Handover`). Docker gives a
    container 64 MB by default; running out later kills the run with a bus error or "No space left"."""
    need = workers * (PREFETCH + 2) * batch_bytes
    try:
        total = shutil.disk_usage(shm).total
    except OSError:
        return True  # not Linux, or no such mount: nothing to check
    if total >= need:
        return True
    log.warning("%s holds %.0f MB but %d loader workers keep up to %.0f MB of batches there (%.1f MB each): run the container "
                "with --ipc=host or --shm-size=%dm, or lower --num-workers or --batch-size",
                shm, total / 2**20, workers, need / 2**20, batch_bytes / 2**20, -(-need // 2**20))
    return False


def worker_error_message(e: BaseException) -> str:
    """The message a loader worker raised. The DataLoader re-raises a worker's exception in this process
    as ``Caught DataError in DataLoader worker process 0.\nOriginal Traceback …``, the whole traceback
    in the message; the user needs its last line, which names the file, the record and why."""
    msg = str(e)
    if not msg.startswith("Caught ") or "Traceback" not in msg:
        return msg
    last = msg.rstrip().splitlines()[-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last)


def rank_position(state: dict, rank: int, world: int) -> dict | None:
    """This rank's data position from a checkpoint, or a fresh start when it has none for this layout."""
    positions = state.get("data_position")
    if not positions or len(positions) != world:
        log.warning("checkpoint has no data position for %d ranks: the data stream restarts at epoch %d", world, state.get("epoch", 0))
        return {"positions": [[int(state.get("epoch", 0)), 0]], "turn": 0}
    return positions[rank]
