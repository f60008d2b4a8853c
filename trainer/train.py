"""Pre-train a single- or dual-stream visio-linguistic BERT with MLM, MRC, ITM and grounding losses.

    python -m trainer.train --regions data/regions --labels data/labels --out runs/pretrain [--model dual] ...
    torchrun --nproc_per_node 8 -m trainer.train ...        # DDP: nccl on GPU, gloo on CPU

Every field of :class:`trainer.config.TrainConfig` is a flag; ``--config file.yaml`` sets many.
One visible loop (like nanoGPT): fetch ``grad_accum`` micro-batches → forward/backward each →
clip → AdamW step → log → checkpoint. Writes ``<out>/losses.jsonl`` (one line per step, every
term), TensorBoard scalars under ``<out>/tb``, and checkpoints (see trainer.runtime.checkpoint).

On a GPU the loop never waits on the device between log lines: step statistics stay on the
device and are read back every ``log_every`` steps (and before each checkpoint), each batch is
copied once from pinned memory, AdamW is fused, and ``torch.compile`` is on (``--compile``).

Exact resume: each loader worker's stream is a pure function of (seed, epoch, rank, world size,
worker, workers), and the dropout RNG is re-seeded from (seed, step, rank) at every step, so a
checkpoint needs only the weights, the optimizer and the data position: per rank, each worker's
(epoch, items taken) and whose turn is next. Resuming restarts every worker there.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from schemas.shards import decode_region, iter_shard
from trainer.runtime.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig, parse_args
from trainer.data.chain import EndlessStreams
from trainer.data.shard_set import _seed_of, nonempty_region_shards, region_shards, stale_labels_problem
from trainer.losses import TERMS, loss_counts, loss_sums, total_loss, weights
from trainer.models import build_model
from trainer.data.text import load_tokenizer
from ssga_io import atomic
from trainer.runtime.device import to_device
from trainer.runtime.optim import lr_at, make_optimizer, set_lr

log = logging.getLogger("trainer")


# ---------------------------------------------------------------------------------------------
# Set-up


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


def probe_shapes(regions_dir: str) -> tuple[int, int]:
    """(feature width, detector classes) from the first sample of the first non-empty region shard.

    Empty shards are allowed (a small corpus over many shards has some); 1 class when the source
    has no class distribution.
    """
    shards = region_shards(regions_dir)
    for shard in shards:
        for key, members in iter_shard(shard):
            rec = decode_region(members, f"{shard}:{key}")
            return int(rec.features.shape[1]), int(rec.cls_prob.shape[1]) if rec.cls_prob is not None else 1
    raise ValueError(f"{regions_dir}: all {len(shards)} region shards are empty; re-run the regions stage on a non-empty source")


# ---------------------------------------------------------------------------------------------
# Data position


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
            prefetch_factor=4 if cfg.num_workers > 0 else None, pin_memory=pin_memory,
        )
        self._it = iter(self.loader)

    def position(self) -> dict:
        return {"positions": [list(p) for p in self.positions], "turn": self.turn}

    def next(self) -> dict:
        """The next batch with examples; raises when every worker went through whole epochs yielding none."""
        workers = len(self.positions)
        idle = [0] * workers  # epoch ends per worker since the last batch with examples
        while True:
            item = next(self._it)
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


# ---------------------------------------------------------------------------------------------
# One optimizer step


STATS = (*TERMS, "loss", "grad_norm", "examples")  # the row train_step returns, in this order


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[dict], cfg: TrainConfig,
    step: int, device: torch.device, lambdas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward/backward every micro-batch, clip, step. Returns [len(STATS)] on ``device``: every loss
    term over the global batch, the weighted loss, the gradient norm and the number of examples.

    Nothing is read back to the host (see :func:`stats_dict` for that). Each term is normalised by
    its item count over all micro-batches and ranks (all-reduced before the forward pass), so
    1 process × batch B, k accumulation steps × B/k and n ranks × B/n all give the same gradient.
    Every collective runs on tensors on ``device`` (what NCCL requires on a GPU).
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    batches = [to_device(b, device) for b in micro_batches]
    counts = torch.stack([loss_counts(b) for b in batches]).sum(0)
    if world > 1:
        dist.all_reduce(counts)
    lambdas = weights(cfg).to(device) if lambdas is None else lambdas
    set_lr(optimizer, lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps))
    torch.manual_seed(_seed_of(cfg.seed, "step", step, rank))  # dropout: a function of the step
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else contextlib.nullcontext()

    model.train()
    sums = torch.zeros(len(TERMS), device=device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext()
        with sync:
            with amp:
                out = model(batch)
            s = loss_sums(out, batch)
            # DDP averages gradients over ranks; × world turns that average back into the global sum.
            (total_loss(s, counts, lambdas) * world).backward()
        sums += s.detach()
    if cfg.clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    else:
        grad_norm = torch.zeros((), device=device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    if world > 1:
        dist.all_reduce(sums)
    terms = sums / counts.clamp(min=1)
    return torch.cat([terms, (lambdas * terms).sum().view(1), grad_norm.float().view(1), counts[2].view(1)]).detach()


def stats_dict(row: torch.Tensor | list[float], lr: float | None = None) -> dict[str, float]:
    """A train_step row as ``{name: float}`` (reads it back to the host)."""
    values = row.tolist() if torch.is_tensor(row) else list(row)
    out = dict(zip(STATS, values))
    out["examples"] = int(out["examples"])
    if lr is not None:
        out["lr"] = lr
    return out


def compile_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")


# ---------------------------------------------------------------------------------------------
# The loop


class LossLog:
    """Per-step stats stay on the device; every ``log_every`` steps (and before each checkpoint)
    they come to the host in one copy, are checked for non-finite values and appended to
    ``losses.jsonl`` (one line per step), so the host synchronises once per flush, not per step."""

    def __init__(self, out: Path, rank: int, writer, progress):
        self.out, self.rank, self.writer, self.progress = out, rank, writer, progress
        self.pending: list[tuple[int, torch.Tensor, dict]] = []
        self.records: list[dict[str, Any]] = []
        self.tick = time.perf_counter()

    def add(self, step: int, row: torch.Tensor, extra: dict) -> None:
        self.pending.append((step, row, extra))

    def flush(self) -> None:
        if not self.pending:
            return
        rows = torch.stack([r for _, r, _ in self.pending]).cpu().tolist()  # the one host sync
        now = time.perf_counter()
        rate = sum(r[STATS.index("examples")] for r in rows) / max(now - self.tick, 1e-9)
        recs, bad = [], None
        for (step, _, extra), row in zip(self.pending, rows):
            rec = {"step": step, **stats_dict(row), **extra, "samples_per_s": rate}
            if not all(math.isfinite(rec[t]) for t in ("loss", *TERMS)):
                bad = rec
                break
            recs.append(rec)
        self.pending, self.tick = [], now
        if self.rank == 0 and recs:
            self.records += recs
            with open(self.out / "losses.jsonl", "a") as f:
                f.write("".join(json.dumps(rec, sort_keys=True) + "\n" for rec in recs))
        if bad is not None:
            raise FloatingPointError(f"step {bad['step']}: non-finite loss {bad}")
        if self.rank != 0:
            return
        last = recs[-1]
        for k in ("loss", *TERMS, "lr", "grad_norm", "samples_per_s"):
            self.writer.add_scalar(f"train/{k}", last[k], last["step"])
        log.info("step %d loss %.4f word %.3f img %.3f align %.3f gnd %.3f | %.1f samples/s",
                 last["step"], last["loss"], last["word"], last["img"], last["align"], last["gnd"], rate)
        if self.progress is not None:
            self.progress.update(len(recs))
            self.progress.set_postfix(loss=f"{last['loss']:.3f}", samples_s=f"{rate:.1f}")


def train(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Run (or resume) pre-training; returns the per-step log records of this invocation (rank 0)."""
    rank, world, device = setup_distributed(cfg)
    if device.type == "cpu":
        log.info("torch threads per process: %d", configure_cpu_threads(cfg, world))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # the float32 LSTM of the grounding head
        torch.backends.cudnn.allow_tf32 = True
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / "config.json", cfg.to_dict(), indent=2, sort_keys=True)
    problem = stale_labels_problem(cfg.regions, cfg.labels)
    if problem:
        raise ValueError(problem)
    tokenizer = load_tokenizer(cfg.tokenizer)
    feat_dim, num_classes = probe_shapes(cfg.regions)
    torch.manual_seed(cfg.seed)
    model: torch.nn.Module = build_model(cfg, feat_dim, num_classes, len(tokenizer)).to(device)
    optimizer = make_optimizer(model, cfg)

    step, position = 0, None
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        if state["world_size"] != world:
            log.warning("resuming with world size %d, checkpoint had %d: the data order will differ", world, state["world_size"])
        step = state["step"]
        position = _rank_position(state, rank, world)
        log.info("resumed from %s at step %d (data position %s)", ckpt, step, position)
        if rank == 0:
            _truncate_log(out / "losses.jsonl", step)
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if compile_enabled(cfg, device):
        ddp_model = torch.compile(ddp_model, backend=cfg.compile_backend, dynamic=None)

    stream = BatchStream(cfg, tokenizer, position, rank, world, pin_memory=device.type == "cuda")
    writer = progress = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        if cfg.progress:
            from tqdm import tqdm

            progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    losses = LossLog(out, rank, writer, progress)
    lambdas = weights(cfg).to(device)

    def checkpoint_now(at: int) -> None:
        # Every rank's data position (ranks read different shards), gathered as objects.
        positions = [stream.position()]
        if dist.is_initialized():
            positions = [None] * world
            dist.all_gather_object(positions, stream.position())
        if rank == 0:
            state = {"epoch": stream.epoch, "world_size": world, "num_workers": cfg.num_workers,
                     "data_position": positions, "config": cfg.to_dict(), "skips": stream.skips}
            save_checkpoint(out, at, model, optimizer, state, cfg.keep_ckpts)
        if dist.is_initialized():
            dist.barrier()

    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    try:
        while step < end:
            micro = [stream.next() for _ in range(cfg.grad_accum)]
            row = train_step(ddp_model, optimizer, micro, cfg, step, device, lambdas)
            losses.add(step + 1, row, {"epoch": stream.epoch, "lr": lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps), "skips": dict(stream.skips)})
            step += 1
            ckpt_due = step % cfg.ckpt_every == 0 or step == end
            if step % cfg.log_every == 0 or ckpt_due:
                losses.flush()  # losses.jsonl is complete up to a checkpoint before it is written
            if ckpt_due:
                checkpoint_now(step)
    finally:
        stream.close()
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    skips = total_skips(stream.skips)
    if rank == 0:
        atomic.write_json(out / "data_report.json", {"steps": step, "epoch": stream.epoch, "dropped_or_skipped": skips}, indent=2, sort_keys=True)
        if skips:
            log.warning("skipped or dropped input (all ranks, this invocation): %s", skips)
    return losses.records


def _rank_position(state: dict, rank: int, world: int) -> dict | None:
    """This rank's data position from a checkpoint, or a fresh start when it has none for this layout."""
    positions = state.get("data_position")
    if not positions or len(positions) != world:
        log.warning("checkpoint has no data position for %d ranks: the data stream restarts at epoch %d", world, state.get("epoch", 0))
        return {"positions": [[int(state.get("epoch", 0)), 0]], "turn": 0}
    return positions[rank]


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


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint (steps a crashed run logged but never saved): they get redone."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic.write_text(path, "".join(line + "\n" for line in keep))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cfg = parse_args(argv)
        train(cfg)
    except (ValueError, FileNotFoundError) as e:  # a user's mistake (bad flag, wrong or stale data): one line
        log.error("%s", e)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
