"""The run scaffolding every fine-tuning command shares: common settings and their flags, start-up, the results file, the error guard."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ssga_io import atomic
from trainer.config import TrainConfig
from trainer.tasks.finetune import fit, resolve_init
from trainer.tasks.regions import feature_shape


@dataclass(kw_only=True)
class RunSettings:
    """The settings every task's config has (a task adds its data flags first and may change defaults)."""

    model_config: str = ""  # TrainConfig JSON for an init of "none" (e.g. a pre-training run's config.json)
    train_fraction: float = 1.0  # seeded share of the training examples
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4  # 4e-5 is the papers' for BERT-base at batch 256; a tiny model needs more
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    head_dropout: float = 0.1
    max_regions: int = 0  # 0: the pre-training config's max_regions
    image_id: str = "auto"  # image → region sample key (the task's join module lists the choices)
    id_map: str = ""  # or a mapping file (COCO instances JSON, or TSV stem<TAB>region image_id)
    device: str = "auto"
    cpu_threads: int = 0  # 0: all cores
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    ckpt_every: int = 0  # steps between checkpoints in OUT/checkpoints (0: none)
    resume: bool = False  # continue from OUT/checkpoints' newest checkpoint


RUNTIME_FIELDS = ("out", "device", "cpu_threads", "progress", "ckpt_every", "resume")


def run_settings(cfg: Any) -> dict[str, Any]:
    """The fields of a task's config that decide its results (not where it writes nor how fast it runs):
    what a checkpoint must share with the run that resumes it."""
    return {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_FIELDS}


def add_run_args(ap: argparse.ArgumentParser, d: RunSettings, init_flag: str, image_ids: tuple[str, ...], image_help: str) -> None:
    """The flags of :class:`RunSettings` (``d`` gives the task's defaults)."""
    ap.add_argument("--model-config", default=d.model_config, help=f"TrainConfig JSON for {init_flag} none")
    ap.add_argument("--train-fraction", type=float, default=d.train_fraction)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--warmup-frac", type=float, default=d.warmup_frac)
    ap.add_argument("--head-dropout", type=float, default=d.head_dropout)
    ap.add_argument("--max-regions", type=int, default=d.max_regions, help="0: the pre-training config's")
    ap.add_argument("--image-id", default=d.image_id, choices=image_ids, help=image_help)
    ap.add_argument("--id-map", default=d.id_map, help="mapping file file stem → region image_id (COCO instances JSON or TSV)")
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--cpu-threads", type=int, default=d.cpu_threads)
    ap.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar (default: one on a terminal)")
    ap.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="checkpoint every N steps into OUT/checkpoints (0: none)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")


def add_task_io_args(ap: argparse.ArgumentParser, d: Any, regions_help: str) -> None:
    """``--regions``, ``--out`` and ``--pretrained`` (alias ``--init``): where the task's images' features are,
    where it writes, what it starts from (``d`` gives the task's default init)."""
    ap.add_argument("--regions", required=True, help=regions_help)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pretrained", "--init", dest="pretrained", default=d.pretrained,
                    help="pre-training run dir, checkpoint dir, or 'none' (random init; needs --model-config)")


def pick_device(name: str, cpu_threads: int = 0) -> torch.device:
    """``auto`` → CUDA when present; on CPU, ``cpu_threads`` threads (0: all cores)."""
    device = torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads or os.cpu_count() or 1)
    return device


def start_run(cfg: RunSettings, init: str, join_keys: tuple[str, ...] = ()) -> tuple[torch.device, TrainConfig, Path | None]:
    """``(device, pre-training config, checkpoint or None)`` for a task run initialised from ``init``;
    ``join_keys``: the image-id keys the task's join accepts (checked first)."""
    if join_keys and cfg.image_id not in join_keys:
        raise ValueError(f"--image-id must be one of {join_keys}, got {cfg.image_id!r}")
    return pick_device(cfg.device, cfg.cpu_threads), *resolve_init(init, cfg.model_config)


def results_head(cfg: RunSettings, pcfg: TrainConfig, ckpt: Path | None, losses: list[float]) -> dict[str, Any]:
    """What every task's results.json opens with: its config, the init, and the final loss (mean of the last 20 steps)."""
    return {
        "config": asdict(cfg),
        "init_checkpoint": str(ckpt) if ckpt else None,
        "pretrain_config": pcfg.to_dict(),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
    }


def write_results(out: Path, results: dict[str, Any], started: float) -> dict[str, Any]:
    """Stamp ``wall_s`` (since ``started``, a ``time.perf_counter()``) and write ``out/results.json`` atomically."""
    results["wall_s"] = round(time.perf_counter() - started, 2)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def cli_main(run: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a task's command line: a user's mistake (bad flag value, missing or unjoinable data) is one
    line on stderr and exit status 2, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def fit_task(cfg: RunSettings, regions: Any, build: Callable[[int, int], torch.nn.Module], train_ex: list, collate: Callable,
             loss: Callable, device: torch.device, name: str) -> tuple[torch.nn.Module, Path, list]:
    """Build the task model on the regions' feature shape (seeded, so the head's init is a function of
    the seed) and fit it with the engine, checkpoints in ``OUT/checkpoints``: ``(model, out, losses)``."""
    torch.manual_seed(cfg.seed)
    model = build(*feature_shape(regions)).to(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    losses = fit(model, train_ex, collate, loss, cfg, device, name=name, ckpt_dir=out / "checkpoints", settings=run_settings(cfg))
    return model, out, losses
