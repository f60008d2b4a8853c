"""The DAG's pre-training stage: ``python -m trainer.train`` in a subprocess (the pipelines never import the trainer)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import cli
from pipelines.dag.stages import DagConfig, record
from schemas.manifest import CURRENT_NAME as CURRENT, fingerprint, read_manifest, write_manifest
from ssga_io import atomic

log = logging.getLogger("pipelines.dag")


def pretrain_fingerprint(regions_fp: str, labels_fp: str, train_args: list[str], world_size: int = 1) -> str:
    """Regions, labels, trainer arguments and the world size (it changes which rank reads which shard, so the data order)."""
    return fingerprint("pretrain", regions_fp, labels_fp, train_args, {"world_size": world_size})


def _console_args(train_args: list[str]) -> list[str]:
    """Progress bars only on a terminal (in a log each redraw is a line); never part of the fingerprint."""
    if any(a == "--progress" or a.startswith("--progress=") for a in train_args) or cli.progress_enabled():
        return []
    return ["--progress", "false"]


def pretrain_stage(cfg: DagConfig, report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``python -m trainer.train`` on the current region and label shards, in a subprocess.

    A run directory without a manifest is resumed, not wiped: the trainer continues from its last
    checkpoint. The manifest (written here, last) records the loss summary.
    """
    train_args = ["--steps", str(cfg.steps), *cfg.train_args]
    fp = pretrain_fingerprint(report["regions"]["fingerprint"], report["labels"]["fingerprint"], train_args, cfg.nproc)
    run_dir = Path(cfg.data) / "pretrain" / fp
    manifest = read_manifest(run_dir)
    ran = not (manifest and manifest.get("fingerprint") == fp)
    if ran:
        log.info("stage pretrain: running (%s)", run_dir)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}"] if cfg.nproc > 1 else [sys.executable]
        cmd = [*launcher, "-m", "trainer.train", "--regions", report["regions"]["dir"], "--labels", report["labels"]["dir"],
               "--out", str(run_dir), *train_args, *_console_args(train_args)]
        log.info("$ %s", " ".join(cmd))
        cli.note_state(f"pre-training stopped in {run_dir} (its checkpoints are kept): run the same command again to resume")
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}).returncode
        if rc != 0:
            raise cli.StageFailed(f"stage pretrain: the trainer exited with code {rc} (its output is above); {run_dir} keeps "
                                  "its checkpoints, so the same command resumes")
        manifest = write_manifest(run_dir, {
            "stage": "pretrain", "fingerprint": fp, "upstream": {"regions": report["regions"]["fingerprint"], "labels": report["labels"]["fingerprint"]},
            "train_args": train_args, "world_size": cfg.nproc, "wall_s": round(time.perf_counter() - t0, 1), "losses": loss_summary(run_dir / "losses.jsonl"),
        })
    else:
        log.info("stage pretrain: skipped (complete manifest %s)", fp)
    atomic.write_text(Path(cfg.data) / "pretrain" / CURRENT, fp + "\n")
    record(Path(cfg.data), {"pretrain": {"dir": str(run_dir), "fingerprint": fp}})
    return {**manifest, "dir": str(run_dir), "ran": ran}


TERMS = ("loss", "word", "img", "align", "gnd")


def loss_summary(losses_jsonl: str | os.PathLike) -> dict[str, dict[str, float]]:
    """First and last value (and the mean of the last tenth of steps) of each loss term."""
    rows = [json.loads(line) for line in Path(losses_jsonl).read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    tail = rows[-max(1, len(rows) // 10):]
    return {t: {"first": rows[0][t], "last": rows[-1][t], "last_10pct_mean": sum(r[t] for r in tail) / len(tail)}
            for t in TERMS if t in rows[0]}
