"""The grid's data, built by the project's own CLIs in subprocesses: corpora, region shards, caption subsets, pseudo labels."""
from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from schemas.discovery import shard_dir  # the published output: a stage's CURRENT, never a killed run's leftovers
from trainer.experiment.config import ExperimentConfig


def run_logged(cmd: list[str], log_file: Path) -> None:
    """Run a CLI, its output into ``log_file``; a failure raises with the log's tail."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    with open(log_file, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"command failed (exit {rc}), log {log_file}:\n$ {shlex.join(cmd)}\n{tail}")


def fraction_name(f: float, sep: str = "_") -> str:
    """``1.0`` → "full", ``0.125`` → "1_8" (directory names) or "1/8" (tables, ``sep="/"``)."""
    return "full" if f == 1.0 else f"1{sep}{round(1 / f)}" if abs(1 / f - round(1 / f)) < 1e-9 else f"{f:g}"


def _frac(f: float) -> str:
    return fraction_name(f, "/")


# ---------------------------------------------------------------------------------------------
# Data: corpora, regions, labels (pipeline CLIs)


def make_corpus(out: Path, num_images: int, seed: int, feature_dim: int, logs: Path) -> Path:
    if not (out / "_MANIFEST.json").exists():
        run_logged([sys.executable, "-m", "pipelines.synthetic", "--out", str(out), "--num-images", str(num_images), "--seed", str(seed),
              "--feature-dim", str(feature_dim)], logs / f"{out.name}.log")
    return out


def make_regions(corpus: Path, out: Path, logs: Path) -> Path:
    try:
        return Path(shard_dir(out, "regions"))
    except FileNotFoundError:
        run_logged([sys.executable, "-m", "pipelines.regions", "--npz-dir", str(corpus / "regions_npz"), "--out", str(out), "--num-shards", "4"],
             logs / f"{out.name}.log")
        return Path(shard_dir(out, "regions"))


def subset_captions(captions: Path, fraction: float, seed: int, out: Path) -> Path:
    """Captions of a seeded ``fraction`` of the images, in file order (so caption ids stay the same)."""
    lines = captions.read_text().splitlines(keepends=True)
    images = sorted({Path(line.rstrip("\n").split("\t")[1]).stem for line in lines if "\t" in line})
    k = max(1, int(round(len(images) * fraction)))
    chosen = set(random.Random(seed).sample(images, k))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line for line in lines if "\t" in line and Path(line.rstrip("\n").split("\t")[1]).stem in chosen))
    return out


def make_labels(corpus: Path, regions: Path, captions: Path, out: Path, cfg: ExperimentConfig, logs: Path) -> Path:
    try:
        return Path(shard_dir(out, "labels"))
    except FileNotFoundError:
        pass
    cmd = [sys.executable, "-m", "pipelines.label_pipeline", "--captions", str(captions), "--regions", str(regions), "--out", str(out),
           "--teacher", cfg.teacher, "--objects-vocab", str(corpus / "objects_vocab.txt"), "--flickr30k", str(corpus / "flickr30k"),
           "--images", str(corpus / "images")]
    for a in cfg.teacher_args:
        cmd += ["--teacher-arg", a]
    cmd += ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={max(1, min(cfg.jobs, os.cpu_count() or 1))}"]
    run_logged(cmd, logs / f"{out.name}.log")
    return Path(shard_dir(out, "labels"))


def label_quality(labels_dir: Path) -> dict[str, Any]:
    """Pseudo-label precision/recall (and counts) from the labels manifest."""
    m = json.loads((labels_dir / "_MANIFEST.json").read_text())
    q = next(iter(m.get("quality", {}).values()), {})
    return {"precision": q.get("precision"), "recall": q.get("recall"), "f1": q.get("f1"),
            "images_labelled": m.get("stats", {}).get("images", 0) - m.get("stats", {}).get("images_without_captions", 0),
            "phrases": m.get("stats", {}).get("phrases"), "positives": m.get("stats", {}).get("positive_pairs")}


# ---------------------------------------------------------------------------------------------
# Pre-training and fine-tuning runs
