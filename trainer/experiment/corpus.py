"""The grid's data, built by the project's own CLIs in subprocesses: corpora, region shards, caption subsets, pseudo labels."""
from __future__ import annotations

import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from schemas.discovery import shard_dir  # the published output: a stage's CURRENT, never a killed run's leftovers
from trainer.experiment.config import TASKS, ExperimentConfig

log = logging.getLogger("trainer.experiment")


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
#
# Each data product lives in a fixed directory under WORK/data and has a ``<dir>.spec.json`` beside
# it: the settings that made it, its upstream product's spec included. A product is reused only when
# that spec equals the one asked for; otherwise it is removed and rebuilt, and so is everything made
# from it (its spec is part of theirs, and of the runs'). One work directory holds one grid's data.


@dataclass(frozen=True)
class Data:
    """A data product: where it is and the settings that made it."""

    path: Path
    spec: dict[str, Any]


def spec_file(out: Path) -> Path:
    """``WORK/data/NAME.spec.json`` beside ``out``: outside the product, which its CLI may replace whole."""
    return out.parent / f"{out.name}.spec.json"


def build_once(out: Path, spec: dict[str, Any], complete: Callable[[], bool], build: Callable[[], None]) -> bool:
    """Build ``out`` unless a complete product of the same ``spec`` is there; returns whether it built.

    A product made with other settings, by an older grid without specs, or left unfinished is
    removed first: the pipeline never mixes its outputs with stale ones, nor resumes them.
    """
    sf = spec_file(out)
    if sf.exists() and json.loads(sf.read_text()) == spec and complete():
        return False
    if out.exists():
        log.info("%s: made with other settings (or unfinished), rebuilding it", out)
    sf.unlink(missing_ok=True)  # first: a killed rebuild leaves no spec naming half a product
    if out.exists():
        shutil.rmtree(out)
    build()
    sf.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")  # last: a spec names only a complete product
    return True


def make_corpus(out: Path, num_images: int, seed: int, feature_dim: int, logs: Path) -> Data:
    spec = {"product": "synthetic corpus", "num_images": num_images, "seed": seed, "feature_dim": feature_dim}
    build_once(out, spec, lambda: (out / "_MANIFEST.json").exists(), lambda: run_logged(
        [sys.executable, "-m", "pipelines.synthetic", "--out", str(out), "--num-images", str(num_images), "--seed", str(seed),
         "--feature-dim", str(feature_dim)], logs / f"{out.name}.log"))
    return Data(out, spec)


def make_task_data(task: str, corpus: Data, data_root: Path, logs: Path) -> Data:
    """Task ``task``'s downstream data over ``corpus``'s scenes, in the task's published layout.

    REC's REFER files come with the corpus (``corpus/refer``); the other tasks' are written by their
    generator (``python -m pipelines.synthetic.TASK --corpus CORPUS``) into ``data_root/TASK``, rebuilt
    when the generator's arguments or the corpus change (the spec holds both).
    """
    t = TASKS[task]
    if not t.generator:
        return Data(corpus.path / "refer", {"product": f"{task} data", "corpus": corpus.spec})
    out = data_root / task
    spec = {"product": f"{task} data", "generator": t.generator, "args": list(t.generator_args), "corpus": corpus.spec}
    build_once(out, spec, lambda: (out / "_MANIFEST.json").exists(), lambda: run_logged(
        [sys.executable, "-m", t.generator, "--out", str(out), "--corpus", str(corpus.path), *t.generator_args], logs / f"{task}_data.log"))
    return Data(out, spec)


def _shards(out: Path, prefix: str) -> Path | None:
    try:
        return Path(shard_dir(out, prefix))
    except FileNotFoundError:
        return None


def make_regions(corpus: Data, out: Path, logs: Path) -> Data:
    spec = {"product": "regions", "num_shards": 4, "corpus": corpus.spec}
    build_once(out, spec, lambda: _shards(out, "regions") is not None, lambda: run_logged(
        [sys.executable, "-m", "pipelines.regions", "--npz-dir", str(corpus.path / "regions_npz"), "--out", str(out), "--num-shards", "4"],
        logs / f"{out.name}.log"))
    return Data(Path(shard_dir(out, "regions")), spec)


def subset_captions(captions: Path, fraction: float, seed: int, out: Path) -> Path:
    """Captions of a seeded ``fraction`` of the images, in file order (so caption ids stay the same)."""
    lines = captions.read_text().splitlines(keepends=True)
    images = sorted({Path(line.rstrip("\n").split("\t")[1]).stem for line in lines if "\t" in line})
    k = max(1, int(round(len(images) * fraction)))
    chosen = set(random.Random(seed).sample(images, k))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line for line in lines if "\t" in line and Path(line.rstrip("\n").split("\t")[1]).stem in chosen))
    return out


def make_labels(corpus: Data, regions: Data, fraction: float, out: Path, cfg: ExperimentConfig, logs: Path) -> Data:
    """Pseudo labels of the captions of a seeded ``fraction`` of the corpus's images (all of them at 1).

    The subset is drawn with ``cfg.corpus_seed``; the spec holds the teacher, its arguments, the
    subset and the regions' spec (so the corpus's too).
    """
    captions = {"fraction": fraction, "seed": cfg.corpus_seed} if fraction != 1.0 else "all"
    spec = {"product": "labels", "teacher": cfg.teacher, "teacher_args": list(cfg.teacher_args), "captions": captions, "regions": regions.spec}

    def build() -> None:
        caps = corpus.path / "captions.tsv" if fraction == 1.0 else subset_captions(
            corpus.path / "captions.tsv", fraction, cfg.corpus_seed, out.parent / f"captions_{fraction_name(fraction)}" / "captions.tsv")
        cmd = [sys.executable, "-m", "pipelines.label_pipeline", "--captions", str(caps), "--regions", str(regions.path), "--out", str(out),
               "--teacher", cfg.teacher, "--objects-vocab", str(corpus.path / "objects_vocab.txt"), "--flickr30k", str(corpus.path / "flickr30k"),
               "--images", str(corpus.path / "images")]
        for a in cfg.teacher_args:
            cmd += ["--teacher-arg", a]
        cmd += ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={max(1, min(cfg.jobs, os.cpu_count() or 1))}"]
        run_logged(cmd, logs / f"{out.name}.log")

    build_once(out, spec, lambda: _shards(out, "labels") is not None and (_shards(out, "labels") / "_MANIFEST.json").exists(), build)
    return Data(Path(shard_dir(out, "labels")), spec)


def label_quality(labels_dir: Path) -> dict[str, Any]:
    """The teacher that made the labels, their precision/recall and counts: all from the labels manifest."""
    m = json.loads((labels_dir / "_MANIFEST.json").read_text())
    teacher = m.get("teacher") or {}
    quality = m.get("quality") or {}
    q = quality.get(teacher.get("name"), next(iter(quality.values()), {}))
    stats = m.get("stats", {})
    return {"teacher": teacher_text(teacher), "precision": q.get("precision"), "recall": q.get("recall"), "f1": q.get("f1"),
            "images_labelled": stats.get("images", 0) - stats.get("images_without_captions", 0),
            "phrases": stats.get("phrases"), "positives": stats.get("positive_pairs")}


def teacher_text(describe: dict[str, Any]) -> str:
    """``simulated false_rate=0.3 miss_rate=0.2`` from a manifest's teacher record; the corpus paths the grid
    hands every teacher (ground truth, vocabulary) are left out, other paths shown by file name."""
    if not describe:
        return "unknown (no teacher in the labels manifest)"
    items = sorted((k, v) for k, v in (describe.get("params") or {}).items() if k not in ("flickr30k", "objects_vocab"))
    return " ".join([str(describe.get("name", "?"))] + [f"{k}={Path(v).name if isinstance(v, str) and '/' in v else v}" for k, v in items])


# ---------------------------------------------------------------------------------------------
# Pre-training and fine-tuning runs
