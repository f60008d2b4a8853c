"""Pre-train a single- or dual-stream visio-linguistic BERT with MLM, MRC, ITM and grounding losses.

    python -m trainer.train --regions data/regions --labels data/labels --out runs/pretrain [--model dual] ...
    torchrun --nproc_per_node 8 -m trainer.train ...        # DDP: nccl on GPU, gloo on CPU

Every field of :class:`trainer.config.TrainConfig` is a flag; ``--config file.yaml`` sets many.
One visible loop (like nanoGPT): fetch ``grad_accum`` micro-batches → forward/backward each →
clip → AdamW step → log → checkpoint. Writes ``<out>/losses.jsonl`` (one line per step, every
term), TensorBoard scalars under ``<out>/tb``, and checkpoints (see trainer.checkpoint).

Exact resume: the data stream of an epoch is a pure function of (seed, epoch, world size,
workers), and the dropout RNG is re-seeded from (seed, step, rank) at every step, so a checkpoint
needs only the weights, the optimizer and the data position (epoch, batches taken in the epoch).
Resuming rebuilds that epoch's stream and skips the batches already taken.
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
from trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig, parse_args
from trainer.data import _seed_of, make_loader, region_shards
from trainer.losses import TERMS, loss_counts, loss_sums, total_loss, weights
from trainer.models import build_model
from trainer.text import load_tokenizer

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
    """(feature width, detector classes) from the first region sample; 1 class when there is none."""
    first = region_shards(regions_dir)[0]
    for key, members in iter_shard(first):
        rec = decode_region(members, f"{first}:{key}")
        return int(rec.features.shape[1]), int(rec.cls_prob.shape[1]) if rec.cls_prob is not None else 1
    raise ValueError(f"{first}: empty region shard")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay (the BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then linear decay to 0 at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))


# ---------------------------------------------------------------------------------------------
# Data position


class BatchStream:
    """Batches across epochs, keeping the data position (epoch, batches taken in it).

    Ranks move to the next epoch together: when any rank's shards run out, all do (one all-reduce
    per batch), so DDP never waits on a rank that has nothing to give.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, epoch: int = 0, taken: int = 0):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.epoch, self.taken = epoch, taken
        self.skips: dict[str, int] = {}
        self._it = self._open(skip=taken)

    def _open(self, skip: int) -> Iterator[dict]:
        it = self._real(iter(make_loader(self.cfg, self.tokenizer, self.epoch)))
        for _ in range(skip):  # replay the part of the epoch the checkpoint already trained on
            next(it, None)
        return it

    def _real(self, it: Iterator[dict]) -> Iterator[dict]:
        for batch in it:
            for k, v in batch["skips"].items():
                self.skips[k] = self.skips.get(k, 0) + int(v)
            if batch["n"]:
                yield batch

    def next(self) -> dict:
        for attempt in range(2):
            batch = next(self._it, None)
            have = torch.tensor([0 if batch is None else 1])
            if dist.is_initialized():
                dist.all_reduce(have, op=dist.ReduceOp.MIN)
            if int(have) == 1:
                self.taken += 1
                return batch
            self.epoch, self.taken = self.epoch + 1, 0
            self._it = self._open(skip=0)
        raise RuntimeError(
            f"a whole epoch of {self.cfg.regions} + {self.cfg.labels} yielded no training examples "
            f"(dropped so far: {self.skips or 'nothing'})"
        )


# ---------------------------------------------------------------------------------------------
# One optimizer step


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[dict], cfg: TrainConfig,
    step: int, device: torch.device,
) -> dict[str, float]:
    """Forward/backward every micro-batch, clip, step. Returns every loss term over the global batch.

    Each term is normalised by its item count over all micro-batches and ranks (all-reduced before
    the forward pass), so 1 process × batch B, k accumulation steps × B/k and n ranks × B/n all
    give the same gradient.
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    counts = torch.stack([loss_counts(b) for b in micro_batches]).sum(0).to(device)
    if world > 1:
        dist.all_reduce(counts)
    lambdas = weights(cfg).to(device)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    torch.manual_seed(_seed_of(cfg.seed, "step", step, rank))  # dropout: a function of the step
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else contextlib.nullcontext()

    model.train()
    sums = torch.zeros(len(TERMS), device=device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext()
        with sync:
            with amp:
                out = model(to_device(batch, device))
            s = loss_sums(out, to_device(batch, device))
            # DDP averages gradients over ranks; × world turns that average back into the global sum.
            (total_loss(s, counts, lambdas) * world).backward()
        sums += s.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip) if cfg.clip > 0 else torch.tensor(0.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    if world > 1:
        dist.all_reduce(sums)
    terms = sums / counts.clamp(min=1)
    result = {name: float(v) for name, v in zip(TERMS, terms)}
    result["loss"] = float((lambdas * terms).sum())
    result["grad_norm"] = float(grad_norm)
    result["lr"] = optimizer.param_groups[0]["lr"]
    result["examples"] = int(counts[2])
    return result


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Run (or resume) pre-training; returns the per-step log records of this invocation."""
    rank, world, device = setup_distributed(cfg)
    if device.type == "cpu":
        log.info("torch threads per process: %d", configure_cpu_threads(cfg, world))
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out / "config.json", cfg.to_dict())
    shards = region_shards(cfg.regions)
    if len(shards) < world:
        raise ValueError(f"{cfg.regions}: {len(shards)} region shards cannot feed {world} ranks; write at least one per rank")
    if len(shards) < world * max(1, cfg.num_workers):
        log.warning("%d shards for %d ranks x %d workers: some loader workers will sit idle", len(shards), world, cfg.num_workers)
    tokenizer = load_tokenizer(cfg.tokenizer)
    feat_dim, num_classes = probe_shapes(cfg.regions)
    torch.manual_seed(cfg.seed)
    model: torch.nn.Module = build_model(cfg, feat_dim, num_classes, len(tokenizer)).to(device)
    optimizer = make_optimizer(model, cfg)

    step, epoch, taken = 0, 0, 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        if (state["world_size"], state["num_workers"]) != (world, cfg.num_workers):
            log.warning("resuming with world size %d × %d workers, checkpoint had %d × %d: the data order will differ",
                        world, cfg.num_workers, state["world_size"], state["num_workers"])
        step, epoch, taken = state["step"], state["epoch"], state["batches_in_epoch"]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, taken)
        if rank == 0:
            _truncate_log(out / "losses.jsonl", step)
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model

    stream = BatchStream(cfg, tokenizer, epoch, taken)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    records: list[dict[str, Any]] = []
    progress = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)

    def checkpoint_now(at: int) -> None:
        if rank == 0:
            state = {"epoch": stream.epoch, "batches_in_epoch": stream.taken, "world_size": world,
                     "num_workers": cfg.num_workers, "config": cfg.to_dict(), "skips": stream.skips}
            save_checkpoint(out, at, model, optimizer, state, cfg.keep_ckpts)
        if dist.is_initialized():
            dist.barrier()

    tick, seen = time.perf_counter(), 0
    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    while step < end:
        micro = [stream.next() for _ in range(cfg.grad_accum)]
        result = train_step(ddp_model, optimizer, micro, cfg, step, device)
        step += 1
        seen += result["examples"]
        if not all(math.isfinite(result[t]) for t in ("loss", *TERMS)):
            raise FloatingPointError(f"step {step}: non-finite loss {result}")
        if rank == 0:
            now = time.perf_counter()
            rec = {"step": step, "epoch": stream.epoch, **result, "samples_per_s": seen / max(now - tick, 1e-9),
                   "skips": dict(stream.skips)}
            records.append(rec)
            with open(out / "losses.jsonl", "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
            if step % cfg.log_every == 0 or step == end:
                for k in ("loss", *TERMS, "lr", "grad_norm", "samples_per_s"):
                    writer.add_scalar(f"train/{k}", rec[k], step)
                log.info("step %d loss %.4f word %.3f img %.3f align %.3f gnd %.3f | %.1f samples/s",
                         step, rec["loss"], rec["word"], rec["img"], rec["align"], rec["gnd"], rec["samples_per_s"])
                tick, seen = now, 0
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{rec['loss']:.3f}", samples_s=f"{rec['samples_per_s']:.1f}")
        if step % cfg.ckpt_every == 0 or step == end:
            checkpoint_now(step)
    if progress is not None:
        progress.close()
    if writer is not None:
        writer.close()
    skips = total_skips(stream.skips)
    if rank == 0:
        _write_json_atomic(out / "data_report.json", {"steps": step, "epoch": stream.epoch, "dropped_or_skipped": skips})
        if skips:
            log.warning("skipped or dropped input (all ranks, this invocation): %s", skips)
    return records


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
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = parse_args(argv)
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
