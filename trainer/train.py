"""Pre-train a single- or dual-stream visio-linguistic BERT with MLM, MRC, ITM and an alignment method.

``--method``: ``ssga`` (grounding loss from the teacher's pseudo labels, the default), ``none``,
``partial_ot`` (GroundedBERT), ``ssga+partial_ot``, or ``mu_vla`` (unpaired images and sentences via
the retrieval shards, with the region–tag → region–phrase → image–sentence curriculum; see
:mod:`trainer.losses` for the terms each trains).

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

Around the loop: :mod:`trainer.runtime.distributed` (rank, device, threads),
:mod:`trainer.data.stream` (the batch stream and its position), :mod:`trainer.runtime.loss_log`
(``losses.jsonl``, TensorBoard, progress) and :mod:`trainer.runtime.checkpoint`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ssga_io import atomic
from ssga_io.console import progress_enabled, quiet_libraries
from trainer.config import TrainConfig, parse_args
from trainer.data.shard_set import _seed_of, probe_shapes, stale_labels_problem
from trainer.data.stream import BatchStream, rank_position
from trainer.data.text import load_tokenizer
from trainer.losses import TERMS, batch_parts, part_counts, part_sums, total_loss, weights
from trainer.objectives.curriculum import STAGES, Curriculum
from trainer.models import build_model
from trainer.runtime.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.runtime.device import to_device
from trainer.runtime.distributed import (configure_cpu_threads, enable_tf32, loader_workers, local_world_size, setup_distributed,
                                         total_skips)
from trainer.runtime.loss_log import STATS, LossLog, truncate_log
from trainer.runtime.optim import lr_at, make_optimizer, set_lr

log = logging.getLogger("trainer")


# ---------------------------------------------------------------------------------------------
# One optimizer step


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[dict], cfg: TrainConfig,
    step: int, device: torch.device, lambdas: torch.Tensor | None = None, active: set[str] | None = None,
) -> torch.Tensor:
    """Forward/backward every part of every micro-batch, clip, step (``active``: the μ-VLA curriculum's
    stages at this step; a paired batch is one part). Returns [len(STATS)] on ``device``: every loss
    term over the global batch, the weighted loss, the gradient norm and the number of examples.

    Nothing is read back to the host (see :func:`trainer.runtime.loss_log.stats_dict` for that), and
    nothing is copied to the device from pageable memory without ``non_blocking``: either makes the
    host wait for the GPU to drain, so the next step's host work could not overlap this step's kernels. Each term is normalised by
    its item count over all micro-batches and ranks (all-reduced before the forward pass), so
    1 process × batch B, k accumulation steps × B/k and n ranks × B/n all give the same gradient.
    Every collective runs on tensors on ``device`` (what NCCL requires on a GPU).
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    parts = [p for b in micro_batches for p in batch_parts(to_device(b, device), active)]
    counts = torch.stack([part_counts(kind, p, cfg) for kind, p in parts]).sum(0)
    # Examples (images for μ-VLA) ride along with the item counts: one collective for both.
    n = float(sum(len(b["itm_label"]) if "itm_label" in b else int(b["n"]) for b in micro_batches))
    counts = torch.cat([counts, torch.full((1,), n, device=device)])
    if world > 1:
        dist.all_reduce(counts)
    counts, examples = counts[:-1], counts[-1]
    lambdas = weights(cfg).to(device, non_blocking=True) if lambdas is None else lambdas
    set_lr(optimizer, lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps))
    torch.manual_seed(_seed_of(cfg.seed, "step", step, rank))  # dropout: a function of the step
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else contextlib.nullcontext()

    model.train()
    sums = torch.zeros(len(TERMS), device=device)
    for i, (kind, part) in enumerate(parts):
        last = i == len(parts) - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext()
        with sync:
            with amp:
                out = model(part)
            s = part_sums(kind, out, part, cfg)
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
    return torch.cat([terms, (lambdas * terms).sum().view(1), grad_norm.float().view(1), examples.view(1)]).detach()


def compile_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")


def compile_model(model: torch.nn.Module, cfg: TrainConfig, dynamic: bool = True) -> torch.nn.Module:
    """``torch.compile`` for batches whose sizes all vary (text length, masked positions, pairs, phrase
    width): symbolic sizes from the start, and no tying of two sizes that happen to be equal in one
    batch (duck shapes). Otherwise each new shape costs a recompile: 12 graphs in the test's 40 steps, not 3.
    (``dynamic=False``: torch's default specialisation, for a bench on one fixed batch.)"""
    if not dynamic:
        return torch.compile(model, backend=cfg.compile_backend)
    import torch._inductor.config as inductor_config
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    # Inductor's coalescing analysis picks tilings for static shapes only (its own note), yet in torch 2.11
    # it still runs on symbolic sizes and fails an assertion on this model's graph on CUDA (tiling_utils'
    # get_pw_red_splits; seen on an H100, first step). Off, the tiling is the default one.
    inductor_config.triton.coalesce_tiling_analysis = False
    return torch.compile(model, backend=cfg.compile_backend, dynamic=True)


def compile_failure(e: BaseException) -> bool:
    """Whether ``e`` is torch.compile failing to build a graph (an Inductor bug, a missing compiler),
    not the model's own error."""
    from torch._dynamo.exc import BackendCompilerFailed

    return isinstance(e, BackendCompilerFailed)


def eager_fallback(cfg: TrainConfig, e: BaseException, world: int) -> bool:
    """Whether a step that raised ``e`` may go on eagerly: a compile failure under ``--compile auto``
    (a speed-up, not a requirement) in one process. Not with several ranks: the others may have
    compiled and gone on to the gradient all-reduce, which a redone step's collectives would meet
    out of order."""
    return cfg.compile == "auto" and world == 1 and compile_failure(e)


def stop_compiling(e: BaseException, cfg: TrainConfig, step: int, rank: int, world: int) -> None:
    """After a compiled step raised ``e``: log the switch to eager when :func:`eager_fallback` allows
    it, else re-raise ``e`` (with one line naming ``--compile off`` when torch.compile failed)."""
    why = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])[:300]  # "backend='inductor' raised: AssertionError: …"
    if not eager_fallback(cfg, e, world):
        if compile_failure(e):
            log.error("torch.compile failed at step %d on rank %d (%s); rerun with --compile off", step, rank, why)
        raise e
    log.warning("torch.compile failed at step %d (%s); continuing without it. "
                "--compile off skips it, --compile on makes this an error", step, why)


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Run (or resume) pre-training; returns the per-step log records of this invocation (rank 0)."""
    rank, world, device = setup_distributed(cfg)
    cfg = dataclasses.replace(cfg, num_workers=loader_workers(cfg, device, local_world_size()))  # -1: auto, by device and cores
    if rank == 0:
        log.info("loader workers per process: %d", cfg.num_workers)
    if device.type == "cpu":
        log.info("torch threads per process: %d", configure_cpu_threads(cfg, world))
    else:
        enable_tf32()
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / "config.json", cfg.to_dict(), indent=2, sort_keys=True)
    problem = None if cfg.method == "mu_vla" else stale_labels_problem(cfg.regions, cfg.labels)
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
        position = rank_position(state, rank, world)
        log.info("resumed from %s at step %d (data position %s)", ckpt, step, position)
        if rank == 0:
            truncate_log(out / "losses.jsonl", step)
    # μ-VLA's early stages leave heads unused (ITM, grounding, region-to-token): DDP must not wait for them.
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=cfg.method == "mu_vla") if world > 1 else model
    eager_model = ddp_model
    if compile_enabled(cfg, device):
        ddp_model = compile_model(ddp_model, cfg)

    stream = BatchStream(cfg, tokenizer, position, rank, world, pin_memory=device.type == "cuda")
    writer = progress = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        if cfg.progress if cfg.progress is not None else progress_enabled():
            from tqdm import tqdm

            progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    losses = LossLog(out, rank, writer, progress)
    lambdas = weights(cfg).to(device)
    curriculum = Curriculum(cfg.mu_region_phrase_at, cfg.mu_image_sentence_at) if cfg.method == "mu_vla" else None

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
            extra = {"epoch": stream.epoch, "lr": lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps), "skips": dict(stream.skips)}
            active = None
            if curriculum is not None:  # a pure function of the step, so a resumed run logs the same
                active = curriculum.active(step)
                extra["objectives"] = [s for s in STAGES if s in active]
                if step == 0 or active != curriculum.active(step - 1):
                    extra["curriculum_switch"] = [s for s in extra["objectives"] if step == 0 or s not in curriculum.active(step - 1)]
            try:
                row = train_step(ddp_model, optimizer, micro, cfg, step, device, lambdas, active)
            except Exception as e:
                # A graph torch cannot compile (at the first step or at a later new shape) runs eager
                # from then on. The failed step is redone from zero gradients with the same seed, so
                # the losses are those of an eager run.
                if ddp_model is eager_model:
                    raise
                stop_compiling(e, cfg, step, rank, world)
                optimizer.zero_grad(set_to_none=True)
                ddp_model = eager_model
                row = train_step(ddp_model, optimizer, micro, cfg, step, device, lambdas, active)
            losses.add(step + 1, row, extra)
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


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cfg = parse_args(argv)
        quiet_libraries(verbose=cfg.verbose)
        train(cfg)
    except (ValueError, FileNotFoundError) as e:  # a user's mistake (bad flag, wrong or stale data): one line
        log.error("%s", e)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
