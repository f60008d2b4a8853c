"""The data-efficiency grid: does grounding alignment from pseudo labels help downstream, more so with less data?

    python -m trainer.experiment --work runs/experiment            # the default grid (make experiment)
    python -m trainer.experiment --work W --variants none,phrase --seeds 0 --pretrain-steps 50   # smaller

Grid: pre-training variant × pre-training data × fine-tuning data × seed, on the synthetic corpus.

| variant | TrainConfig |
|---|---|
| ``none`` | ``lambda_gnd 0`` (no grounding loss), 5-d location |
| ``token`` | ``lambda_gnd 20``, ``phrase_repr mean`` (token level), 5-d location |
| ``phrase`` | ``lambda_gnd 20``, ``phrase_repr lstm`` (phrase level), 5-d location |
| ``phrase_spe`` | ``lambda_gnd 20``, ``phrase_repr lstm``, ``location spe`` |
| ``scratch`` (optional) | no pre-training at all (random init, 5-d location): the floor |

Data, all produced here by the project's own CLIs (subprocesses, so the trainer never imports
``pipelines``), under ``WORK/data``:

- a *pre-training* corpus (``--pretrain-images``, generator seed ``--corpus-seed``) → region shards →
  pseudo labels from ``--teacher``. Pre-training data 1/8 = the pseudo labels of a seeded 1/8 of its
  images (the label pipeline runs on those images' captions; the other images get empty label
  samples, which the trainer skips). The subset is fixed by ``--corpus-seed``, not the run seed.
  Every pre-training run takes the same number of steps (same compute; the 1/8 runs repeat data).
- a disjoint *downstream* corpus (``--rec-images``, seed ``--corpus-seed + 1``) whose REFER
  expressions and region shards feed :mod:`trainer.finetune_rec`; fine-tuning 1/8 = a seeded 1/8 of
  its train expressions (seeded by the run seed), same number of steps.

Outputs in ``WORK``: ``results.csv`` (one row per fine-tuning run), ``results.md`` (mean ± std over
seeds per cell, gains over ``none``, the verdict, pseudo-label precision/recall), ``results.png``.
Finished runs are reused on a re-run when their settings are the same (``spec.json`` in each run
directory: the command, and for a fine-tuning its pre-training's command); a run made with other
settings is removed and redone.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("trainer.experiment")

VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"lambda_gnd": 0.0, "phrase_repr": "lstm", "location": "5d"},
    "token": {"lambda_gnd": 20.0, "phrase_repr": "mean", "location": "5d"},
    "phrase": {"lambda_gnd": 20.0, "phrase_repr": "lstm", "location": "5d"},
    "phrase_spe": {"lambda_gnd": 20.0, "phrase_repr": "lstm", "location": "spe"},
    "scratch": {"lambda_gnd": 0.0, "phrase_repr": "lstm", "location": "5d"},  # not pre-trained
}
LABELS = {
    "none": "no grounding loss",
    "token": "grounding, token level",
    "phrase": "grounding, phrase level",
    "phrase_spe": "phrase level + SPE",
    "scratch": "no pre-training",
}
EVAL_SPLITS = ("val", "testA", "testB")
NEEDS = ("shape", "colour", "size", "spatial")  # what a synthetic expression needs to be unique


@dataclass
class ExperimentConfig:
    work: str = "runs/experiment"
    variants: list[str] = field(default_factory=lambda: ["none", "token", "phrase", "phrase_spe"])
    pretrain_fractions: list[float] = field(default_factory=lambda: [1.0, 0.125])
    finetune_fractions: list[float] = field(default_factory=lambda: [1.0, 0.125])
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # --seeds 0,1,2: about 1.5x the time
    scratch: bool = True  # add the no-pre-training floor (cheap: fine-tuning only)
    corpus_seed: int = 0
    pretrain_images: int = 400
    rec_images: int = 250
    feature_dim: int = 64
    teacher: str = "simulated"
    teacher_args: list[str] = field(default_factory=lambda: ["miss_rate=0.2", "false_rate=0.3"])
    # A 2-layer, 128-wide model from scratch needs a larger learning rate than BERT-base's 1e-4 / 4e-5:
    # at 2e-4 fine-tuning stays on the "pick any object" plateau (~30 %, the text unread) for
    # hundreds of steps. 1,500 pre-training steps: at 600 the grounding loss is still at 0.42 (0.18 at 1,500).
    pretrain_steps: int = 1500
    pretrain_batch: int = 16
    pretrain_lr: float = 5e-4
    finetune_steps: int = 400
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    finetune_head: str = "grounding"  # trainer.finetune_rec --head: "grounding" (pre-trained f_align) | "linear" (ViLBERT's)
    hidden_size: int = 128
    num_layers: int = 2
    model: str = "single"
    extra_pretrain_args: list[str] = field(default_factory=list)  # more trainer.train flags, e.g. --text-init minilm
    jobs: int = 2  # runs in parallel (each gets cores / jobs torch threads)
    device: str = "auto"


# ---------------------------------------------------------------------------------------------
# Running subprocesses


def _run(cmd: list[str], log_file: Path) -> None:
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


def shard_dir(root: Path, prefix: str) -> Path:
    """The directory holding ``<prefix>-000000.tar`` under ``root`` (root, or a stage/fingerprint child).

    The pipelines may publish into fingerprint-named subdirectories; this finds the newest one
    without depending on that layout.
    """
    hits = sorted(root.rglob(f"{prefix}-000000.tar"), key=lambda p: p.stat().st_mtime)
    if not hits:
        raise FileNotFoundError(f"{root}: no {prefix}-000000.tar below it")
    return hits[-1].parent


def _fraction_name(f: float, sep: str = "_") -> str:
    """``1.0`` → "full", ``0.125`` → "1_8" (directory names) or "1/8" (tables, ``sep="/"``)."""
    return "full" if f == 1.0 else f"1{sep}{round(1 / f)}" if abs(1 / f - round(1 / f)) < 1e-9 else f"{f:g}"


def _frac(f: float) -> str:
    return _fraction_name(f, "/")


# ---------------------------------------------------------------------------------------------
# Data: corpora, regions, labels (pipeline CLIs)


def make_corpus(out: Path, num_images: int, seed: int, feature_dim: int, logs: Path) -> Path:
    if not (out / "_MANIFEST.json").exists():
        _run([sys.executable, "-m", "pipelines.synthetic", "--out", str(out), "--num-images", str(num_images), "--seed", str(seed),
              "--feature-dim", str(feature_dim)], logs / f"{out.name}.log")
    return out


def make_regions(corpus: Path, out: Path, logs: Path) -> Path:
    try:
        return shard_dir(out, "regions")
    except FileNotFoundError:
        _run([sys.executable, "-m", "pipelines.regions", "--npz-dir", str(corpus / "regions_npz"), "--out", str(out), "--num-shards", "4"],
             logs / f"{out.name}.log")
        return shard_dir(out, "regions")


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
        return shard_dir(out, "labels")
    except FileNotFoundError:
        pass
    cmd = [sys.executable, "-m", "pipelines.label_pipeline", "--captions", str(captions), "--regions", str(regions), "--out", str(out),
           "--teacher", cfg.teacher, "--objects-vocab", str(corpus / "objects_vocab.txt"), "--flickr30k", str(corpus / "flickr30k"),
           "--images", str(corpus / "images")]
    for a in cfg.teacher_args:
        cmd += ["--teacher-arg", a]
    cmd += ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={max(1, min(cfg.jobs, os.cpu_count() or 1))}"]
    _run(cmd, logs / f"{out.name}.log")
    return shard_dir(out, "labels")


def label_quality(labels_dir: Path) -> dict[str, Any]:
    """Pseudo-label precision/recall (and counts) from the labels manifest."""
    m = json.loads((labels_dir / "_MANIFEST.json").read_text())
    q = next(iter(m.get("quality", {}).values()), {})
    return {"precision": q.get("precision"), "recall": q.get("recall"), "f1": q.get("f1"),
            "images_labelled": m.get("stats", {}).get("images", 0) - m.get("stats", {}).get("images_without_captions", 0),
            "phrases": m.get("stats", {}).get("phrases"), "positives": m.get("stats", {}).get("positive_pairs")}


# ---------------------------------------------------------------------------------------------
# Pre-training and fine-tuning runs


def pretrain_cmd(cfg: ExperimentConfig, variant: str, regions: Path, labels: Path, out: Path, seed: int, threads: int) -> list[str]:
    v = VARIANTS[variant]
    return [sys.executable, "-m", "trainer.train", "--regions", str(regions), "--labels", str(labels), "--out", str(out),
            "--steps", str(cfg.pretrain_steps), "--batch-size", str(cfg.pretrain_batch), "--lr", str(cfg.pretrain_lr),
            "--warmup-steps", str(max(1, cfg.pretrain_steps // 10)), "--seed", str(seed), "--model", cfg.model,
            "--hidden-size", str(cfg.hidden_size), "--num-layers", str(cfg.num_layers),
            "--lambda-gnd", str(v["lambda_gnd"]), "--phrase-repr", v["phrase_repr"], "--location", v["location"],
            "--num-workers", "0", "--cpu-threads", str(threads), "--ckpt-every", str(max(1, cfg.pretrain_steps)), "--keep-ckpts", "1",
            "--log-every", "50", "--progress", "false", "--device", cfg.device, *cfg.extra_pretrain_args]


def finetune_cmd(cfg: ExperimentConfig, init: str, refer: Path, regions: Path, out: Path, fraction: float, seed: int, threads: int,
                 model_config: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "trainer.finetune_rec", "--refer", str(refer), "--regions", str(regions), "--init", init, "--out", str(out),
           "--train-fraction", str(fraction), "--seed", str(seed), "--steps", str(cfg.finetune_steps), "--batch-size", str(cfg.finetune_batch),
           "--lr", str(cfg.finetune_lr), "--head", cfg.finetune_head, "--cpu-threads", str(threads), "--device", cfg.device, "--no-progress"]
    return cmd + (["--model-config", str(model_config)] if model_config else [])


def _pretrain_done(out: Path, steps: int) -> bool:
    p = out / "latest.json"
    return p.exists() and json.loads(p.read_text()).get("step") == steps


def run_spec(cmd: list[str], work: Path) -> list[str]:
    """What makes a run what it is: its command without the interpreter and the thread count, with
    paths inside ``work`` written as ``<work>/…`` so that a copied or moved work directory keeps its runs."""
    spec = [a.replace(str(work), "<work>") for a in cmd[1:]]
    if "--cpu-threads" in spec:
        i = spec.index("--cpu-threads")
        del spec[i : i + 2]
    return spec


def needs_run(cmd: list[str], work: Path, out: Path, complete: bool, upstream: Path | None = None) -> bool:
    """Whether ``cmd`` must run into ``out``: not when a complete run of the same spec is there.

    ``upstream``: the run directory this one starts from (a fine-tuning's pre-training run); its
    spec is part of this one's, so a redone pre-training redoes the fine-tunings made from it.

    A run directory made by another spec (other steps, learning rate, head, data…) is removed first,
    so a changed flag can never reuse a stale result, nor resume a checkpoint of other settings. A
    partial run of the same spec is kept: the trainer resumes it exactly.
    """
    spec_file = out / "spec.json"
    spec = run_spec(cmd, work) + ([] if upstream is None else json.loads((upstream / "spec.json").read_text()))
    if spec_file.exists() and json.loads(spec_file.read_text()) == spec:
        return not complete
    if out.exists():
        log.info("%s: made with other settings, redoing it", out)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return True


def run_grid(cfg: ExperimentConfig, command: str = "") -> Path:
    """Everything: data, pre-training, fine-tuning, tables and plot. Returns ``WORK/results.md``."""
    t0 = time.perf_counter()
    work = Path(cfg.work)
    data, logs = work / "data", work / "logs"
    threads = max(1, (os.cpu_count() or 1) // max(1, cfg.jobs))
    bad = [v for v in cfg.variants if v not in VARIANTS or v == "scratch"]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {[v for v in VARIANTS if v != 'scratch']} (scratch: --scratch)")
    if "none" not in cfg.variants:
        log.warning("variant 'none' is not in the grid: gains over it cannot be computed")

    log.info("data: corpora, region shards, pseudo labels (%s teacher)", cfg.teacher)
    pre_corpus = make_corpus(data / "pretrain_corpus", cfg.pretrain_images, cfg.corpus_seed, cfg.feature_dim, logs)
    rec_corpus = make_corpus(data / "rec_corpus", cfg.rec_images, cfg.corpus_seed + 1, cfg.feature_dim, logs)
    pre_regions = make_regions(pre_corpus, data / "pretrain_regions", logs)
    rec_regions = make_regions(rec_corpus, data / "rec_regions", logs)
    labels, quality = {}, {}
    for pf in cfg.pretrain_fractions:
        name = _fraction_name(pf)
        caps = pre_corpus / "captions.tsv" if pf == 1.0 else subset_captions(
            pre_corpus / "captions.tsv", pf, cfg.corpus_seed, data / f"captions_{name}" / "captions.tsv")
        labels[pf] = make_labels(pre_corpus, pre_regions, caps, data / f"labels_{name}", cfg, logs)
        quality[pf] = label_quality(labels[pf])
    t_data = time.perf_counter() - t0

    log.info("pre-training: %d variants x %d data fractions x %d seeds", len(cfg.variants), len(cfg.pretrain_fractions), len(cfg.seeds))
    pre_jobs = []
    for v in cfg.variants:
        for pf in cfg.pretrain_fractions:
            for s in cfg.seeds:
                out = work / "pretrain" / f"{v}_p{_fraction_name(pf)}_s{s}"
                cmd = pretrain_cmd(cfg, v, pre_regions, labels[pf], out, s, threads)
                if needs_run(cmd, work, out, _pretrain_done(out, cfg.pretrain_steps)):
                    pre_jobs.append((cmd, out / "run.log"))
    _run_all(pre_jobs, cfg.jobs, "pretrain")
    t_pre = time.perf_counter() - t0 - t_data

    log.info("fine-tuning and evaluation")
    ft_jobs, runs = [], []
    scratch_cfg = work / "pretrain" / "scratch_config.json"
    if cfg.scratch:
        scratch_cfg.parent.mkdir(parents=True, exist_ok=True)
        scratch_cfg.write_text(json.dumps({"model": cfg.model, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                                           "location": VARIANTS["scratch"]["location"]}, indent=2) + "\n")
    for ff in cfg.finetune_fractions:
        for s in cfg.seeds:
            cells = [(v, pf) for v in cfg.variants for pf in cfg.pretrain_fractions] + ([("scratch", 0.0)] if cfg.scratch else [])
            for v, pf in cells:
                tag = f"{v}_p{_fraction_name(pf) if v != 'scratch' else 'none'}_f{_fraction_name(ff)}_s{s}"
                out = work / "finetune" / tag
                init = "none" if v == "scratch" else str(work / "pretrain" / f"{v}_p{_fraction_name(pf)}_s{s}")
                runs.append({"variant": v, "pretrain_fraction": pf, "finetune_fraction": ff, "seed": s, "dir": out})
                cmd = finetune_cmd(cfg, init, rec_corpus / "refer", rec_regions, out, ff, s, threads, scratch_cfg if v == "scratch" else None)
                upstream = None if v == "scratch" else Path(init)
                if needs_run(cmd, work, out, (out / "results.json").exists(), upstream):
                    ft_jobs.append((cmd, out / "run.log"))
    _run_all(ft_jobs, cfg.jobs, "finetune")
    t_ft = time.perf_counter() - t0 - t_data - t_pre

    rows = collect(runs)
    write_csv(rows, work / "results.csv")
    timing = {"data_s": round(t_data, 1), "pretrain_s": round(t_pre, 1), "finetune_s": round(t_ft, 1), "total_s": round(time.perf_counter() - t0, 1),
              "pretrain_runs": len(pre_jobs), "finetune_runs": len(ft_jobs)}
    previous = work / "experiment.json"
    if not pre_jobs and not ft_jobs and previous.exists():  # everything reused: keep the timing of the run that did the work
        timing = {**json.loads(previous.read_text())["timing"], "reused": True}
    plot(rows, cfg, work / "results.png")
    verdict_text, verdict_nums = verdict(rows, cfg)
    md = write_markdown(rows, cfg, quality, timing, verdict_text, work / "results.md", command)
    (work / "experiment.json").write_text(json.dumps({"config": asdict(cfg), "timing": timing, "label_quality": {str(k): v for k, v in quality.items()},
                                                      "verdict": verdict_nums},
                                                     indent=2, sort_keys=True) + "\n")
    log.info("wrote %s, %s, %s in %.0f s", work / "results.md", work / "results.csv", work / "results.png", timing["total_s"])
    return md


def _run_all(jobs: list[tuple[list[str], Path]], parallel: int, what: str) -> None:
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool, tqdm(total=len(jobs), desc=what, unit="run", dynamic_ncols=True) as bar:
        futures = [pool.submit(_run, cmd, lf) for cmd, lf in jobs]
        for f in futures:
            f.result()  # re-raises the first failure with its log tail
            bar.update(1)


# ---------------------------------------------------------------------------------------------
# Results


def collect(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fine-tuning run: accuracy (≥0.5 and >0.5) and oracle per split, and their mean."""
    rows = []
    for r in runs:
        res = json.loads((r["dir"] / "results.json").read_text())
        row = {k: r[k] for k in ("variant", "pretrain_fraction", "finetune_fraction", "seed")}
        row["train_expressions"] = res["train_expressions"]
        row["train_acc"] = res["train_acc"]
        for split in EVAL_SPLITS:
            m = res["splits"].get(split, {})
            row[f"{split}_acc"], row[f"{split}_acc_strict"], row[f"{split}_oracle"] = m.get("acc"), m.get("acc_strict"), m.get("oracle")
        for need in NEEDS:  # pooled over the evaluation splits
            ms = [res["splits"][s]["by_need"][need] for s in EVAL_SPLITS if need in res["splits"].get(s, {}).get("by_need", {})]
            n = sum(m["n"] for m in ms)
            row[f"need_{need}_acc"] = sum(m["acc"] * m["n"] for m in ms) / n if n else None
        row["mean_acc"] = _mean_over_splits(row, "acc")
        for split in EVAL_SPLITS:
            row[f"{split}_acc_swapped_text"] = res["splits"].get(split, {}).get("acc_swapped_text")
        row["mean_acc_swapped_text"] = _mean_over_splits(row, "acc_swapped_text")
        rows.append(row)
    return rows


def _mean_over_splits(row: dict[str, Any], key: str) -> float:
    """Mean of a metric over val/testA/testB, leaving out splits a small corpus lacks."""
    vals = [v for v in (row[f"{s}_{key}"] for s in EVAL_SPLITS) if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k.endswith(("acc", "strict", "oracle", "text")) else v) for k, v in r.items()})


def _cell(rows: list[dict], variant: str, pf: float, ff: float) -> list[dict]:
    return sorted((r for r in rows if r["variant"] == variant and r["finetune_fraction"] == ff and (variant == "scratch" or r["pretrain_fraction"] == pf)),
                  key=lambda r: r["seed"])


def _ms(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    a = np.asarray(values, float) * scale
    return f"{a.mean():.1f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.1f}"


def _pct(values: list[float | None]) -> str:
    """Mean in percent; "–" when a split was empty (a tiny corpus may lack one)."""
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return f"{100 * np.mean(vals):.1f}" if vals else "–"


def gains_by_seed(rows: list[dict], variant: str, pf: float, ff: float, key: str = "mean_acc") -> dict[int, float]:
    """Gain of ``variant`` over ``none`` in the same cell, per seed that both have (paired by seed)."""
    base = {r["seed"]: r[key] for r in _cell(rows, "none", pf, ff)}
    return {r["seed"]: r[key] - base[r["seed"]] for r in _cell(rows, variant, pf, ff) if r["seed"] in base}


def gains(rows: list[dict], variant: str, pf: float, ff: float, key: str = "mean_acc") -> list[float]:
    return list(gains_by_seed(rows, variant, pf, ff, key).values())


def growth(rows: list[dict], variants: list[str], big: tuple[float, float], small: tuple[float, float]) -> dict[str, float]:
    """How much the gain over ``none`` grows from cell ``big`` to cell ``small`` (each ``(pf, ff)``).

    Paired by seed: for each seed, ``gain(v, small) - gain(v, big)`` averaged over the grounding
    variants; ``se`` is the standard error of the mean over seeds. The seed is the unit of
    replication because every variant's gain in a seed shares that seed's ``none`` run.
    """
    per_seed: dict[int, list[tuple[float, float]]] = {}
    for v in variants:
        a, b = gains_by_seed(rows, v, *big), gains_by_seed(rows, v, *small)
        for seed in a.keys() & b.keys():
            per_seed.setdefault(seed, []).append((a[seed], b[seed]))
    if not per_seed:
        return {"gain_big": float("nan"), "gain_small": float("nan"), "growth": float("nan"), "se": float("nan"), "n": 0}
    g_big = [float(np.mean([x for x, _ in pairs])) for _, pairs in sorted(per_seed.items())]
    g_small = [float(np.mean([y for _, y in pairs])) for _, pairs in sorted(per_seed.items())]
    diffs = np.subtract(g_small, g_big)
    n = len(diffs)
    return {"gain_big": float(np.mean(g_big)), "gain_small": float(np.mean(g_small)), "growth": float(np.mean(diffs)),
            "se": float(np.std(diffs, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "n": n}


def verdict(rows: list[dict], cfg: ExperimentConfig) -> tuple[str, dict[str, dict[str, Any]]]:
    """Do the gains of the grounding variants over ``none`` grow as data shrinks?

    Tested along each axis from the (full, full) cell: less pre-training data (fine-tuning full),
    less fine-tuning data (pre-training full), and both. An axis HOLDS when the mean paired growth
    exceeds 2 standard errors, DOES NOT HOLD when it is below -2 s.e., and is NOT SHOWN otherwise.
    """
    grounding = [v for v in cfg.variants if v != "none"]
    pf_big, pf_small = max(cfg.pretrain_fractions), min(cfg.pretrain_fractions)
    ff_big, ff_small = max(cfg.finetune_fractions), min(cfg.finetune_fractions)
    full = (pf_big, ff_big)
    axes = {"pre-training": (pf_small, ff_big), "fine-tuning": (pf_big, ff_small), "both": (pf_small, ff_small)}
    axes = {k: cell for k, cell in axes.items() if cell != full}
    if "none" not in cfg.variants or not grounding or not axes:
        return "not testable with this grid (needs 'none', a grounding variant and two data sizes)", {}
    nums, lines = {}, []
    for axis, cell in axes.items():
        g = growth(rows, grounding, full, cell)
        if not np.isfinite(g["se"]):
            g["verdict"] = "INCONCLUSIVE (fewer than two seeds)"
        elif g["growth"] > 2 * g["se"]:
            g["verdict"] = "HOLDS"
        elif g["growth"] < -2 * g["se"]:
            g["verdict"] = "DOES NOT HOLD"
        else:
            g["verdict"] = "NOT SHOWN"
        nums[axis] = g
        less = {"pre-training": f"pre-training data {_frac(cell[0])}", "fine-tuning": f"fine-tuning data {_frac(cell[1])}",
                "both": f"pre-training {_frac(cell[0])} and fine-tuning {_frac(cell[1])}"}[axis]
        lines.append(f"- {less}: **{g['verdict']}**: mean gain {100 * g['gain_big']:+.1f} pts at full data → {100 * g['gain_small']:+.1f} pts; "
                     f"growth {100 * g['growth']:+.1f} ± {100 * g['se']:.1f} pts (± = 1 s.e. over {g['n']} seeds, paired)")
    held = sum(g["verdict"] == "HOLDS" for g in nums.values())
    return f"holds along {held} of {len(nums)} data axes\n\n" + "\n".join(lines), nums


def write_markdown(rows: list[dict], cfg: ExperimentConfig, quality: dict[float, dict], timing: dict[str, Any], verdict_text: str,
                   path: Path, command: str = "") -> Path:
    cells = [(pf, ff) for pf in cfg.pretrain_fractions for ff in cfg.finetune_fractions]
    variants = cfg.variants + (["scratch"] if cfg.scratch else [])
    n_seeds = len(cfg.seeds)
    out = ["# Data-efficiency grid: referring-expression comprehension (RefCOCO+ protocol, synthetic corpus)", ""]
    out += [f"Command: `{command or 'python -m trainer.experiment (called from Python)'}`  ", f"{'Wall time of the invocation that ran these runs (this one reused them)' if timing.get('reused') else 'Wall time'}: {timing['total_s']:.0f} s "
            f"(data {timing['data_s']:.0f} s, pre-training {timing['pretrain_s']:.0f} s for {timing['pretrain_runs']} runs, "
            f"fine-tuning {timing['finetune_s']:.0f} s for {timing['finetune_runs']} runs; runs already done are reused).", ""]
    out += [f"Accuracy (%) = top-scored proposal with IoU ≥ 0.5, mean ± std over {n_seeds} seed(s), "
            f"mean of val / testA / testB. Pre-training: {cfg.pretrain_images} images, {cfg.pretrain_steps} steps × batch {cfg.pretrain_batch}, lr {cfg.pretrain_lr:g}; "
            f"fine-tuning: {cfg.finetune_steps} steps × batch {cfg.finetune_batch}, lr {cfg.finetune_lr:g}, `{cfg.finetune_head}` head; {cfg.model}-stream, hidden {cfg.hidden_size}, {cfg.num_layers} layers; "
            f"downstream corpus: {cfg.rec_images} images (disjoint from pre-training).", ""]
    head = "| variant | " + " | ".join(f"pre {_frac(pf)} / ft {_frac(ff)}" for pf, ff in cells) + " |"
    out += [head, "|" + "---|" * (len(cells) + 1)]
    for v in variants:
        vals = [_ms([r["mean_acc"] for r in _cell(rows, v, pf, ff)]) for pf, ff in cells]
        out.append(f"| {LABELS[v]} (`{v}`) | " + " | ".join(vals) + " |")
    out += ["", "Gain over `none` (percentage points, paired by seed, mean ± std):", "", head, "|" + "---|" * (len(cells) + 1)]
    for v in cfg.variants:
        if v != "none":
            out.append(f"| {LABELS[v]} (`{v}`) | " + " | ".join(_ms(gains(rows, v, pf, ff)) for pf, ff in cells) + " |")
    out += ["", f"**Verdict (paper: gains grow as data shrinks):** {verdict_text}", ""]
    out += ["Control: does the model read the expression? Accuracy (%) when each expression is swapped for one naming "
            "another object of the same image, scored against the original target (mean of splits, mean ± std over seeds). "
            "A model that ignores the text scores as above; one that reads it falls towards 0.", "", head, "|" + "---|" * (len(cells) + 1)]
    for v in variants:
        out.append(f"| {LABELS[v]} (`{v}`) | " + " | ".join(_ms([r["mean_acc_swapped_text"] for r in _cell(rows, v, pf, ff)]) for pf, ff in cells) + " |")
    out += ["", "Per split (IoU ≥ 0.5 / IoU > 0.5 / oracle upper bound, %, mean over seeds):", "",
            "| variant | pre | ft | " + " | ".join(EVAL_SPLITS) + " |", "|---|---|---|" + "---|" * len(EVAL_SPLITS)]
    for v in variants:
        for pf, ff in cells:
            if v == "scratch" and pf != cfg.pretrain_fractions[0]:
                continue
            rs = _cell(rows, v, pf, ff)
            if rs:
                parts = [" / ".join(_pct([r[f"{s}_{k}"] for r in rs]) for k in ("acc", "acc_strict", "oracle")) for s in EVAL_SPLITS]
                out.append(f"| `{v}` | {'–' if v == 'scratch' else _frac(pf)} | {_frac(ff)} | " + " | ".join(parts) + " |")
    out += ["", "Accuracy (%) by what the expression needs (pooled over val/testA/testB, mean over seeds):", "",
            "| variant | pre | ft | " + " | ".join(NEEDS) + " |", "|---|---|---|" + "---|" * len(NEEDS)]
    for v in variants:
        for pf, ff in [cells[0], cells[-1]] if len(cells) > 1 else cells:
            rs = _cell(rows, v, pf, ff)
            if rs:
                out.append(f"| `{v}` | {'–' if v == 'scratch' else _frac(pf)} | {_frac(ff)} | " + " | ".join(_pct([r.get(f"need_{n}_acc") for r in rs]) for n in NEEDS) + " |")
    out += ["", f"Pseudo labels (teacher `{cfg.teacher}` {' '.join(cfg.teacher_args)}), precision/recall of M against the corpus ground truth at IoU ≥ 0.5:", "",
            "| pre-training data | images labelled | phrases | positive pairs | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
    for pf, q in quality.items():
        f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        out.append(f"| {_frac(pf)} | {q['images_labelled']} | {q['phrases']} | {q['positives']} | {f(q['precision'])} | {f(q['recall'])} | {f(q['f1'])} |")
    out += ["", "Files: `results.csv` (one row per run), `results.png`, runs under `pretrain/` and `finetune/`, logs under `logs/` and in each run.", ""]
    path.write_text("\n".join(out))
    return path


def plot(rows: list[dict], cfg: ExperimentConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(pf, ff) for pf in cfg.pretrain_fractions for ff in cfg.finetune_fractions]
    variants = cfg.variants + (["scratch"] if cfg.scratch else [])
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(cells), 3.6))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        means, stds = [], []
        for pf, ff in cells:
            a = np.asarray([r["mean_acc"] for r in _cell(rows, v, pf, ff)], float) * 100
            means.append(a.mean() if a.size else np.nan)
            stds.append(a.std(ddof=1) if a.size > 1 else 0.0)
        ax.bar(np.arange(len(cells)) + (i - (len(variants) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=LABELS[v])
    ax.set_xticks(np.arange(len(cells)), [f"pre {_frac(pf)}\nft {_frac(ff)}" for pf, ff in cells])
    ax.set_ylabel("REC accuracy, IoU ≥ 0.5 (%)")
    ax.set_title("Referring expressions vs. pre-training / fine-tuning data")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def parse_args(argv: list[str] | None = None) -> ExperimentConfig:
    d = ExperimentConfig()
    ap = argparse.ArgumentParser(prog="python -m trainer.experiment", description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=d.work, help="work directory (data, runs, results)")
    ap.add_argument("--variants", default=",".join(d.variants), help=f"comma list of {list(VARIANTS)[:4]}")
    ap.add_argument("--pretrain-fractions", default="1,0.125")
    ap.add_argument("--finetune-fractions", default="1,0.125")
    ap.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    ap.add_argument("--no-scratch", dest="scratch", action="store_false", help="leave out the no-pre-training floor")
    ap.add_argument("--corpus-seed", type=int, default=d.corpus_seed)
    ap.add_argument("--pretrain-images", type=int, default=d.pretrain_images)
    ap.add_argument("--rec-images", type=int, default=d.rec_images)
    ap.add_argument("--feature-dim", type=int, default=d.feature_dim)
    ap.add_argument("--teacher", default=d.teacher, help="label pipeline teacher (simulated, tag_similarity, oracle, ...)")
    ap.add_argument("--teacher-arg", action="append", default=None, metavar="K=V", help="teacher parameter, repeatable (default: miss_rate=0.2 false_rate=0.3 for simulated)")
    ap.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    ap.add_argument("--pretrain-batch", type=int, default=d.pretrain_batch)
    ap.add_argument("--pretrain-lr", type=float, default=d.pretrain_lr)
    ap.add_argument("--finetune-steps", type=int, default=d.finetune_steps)
    ap.add_argument("--finetune-batch", type=int, default=d.finetune_batch)
    ap.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    ap.add_argument("--finetune-head", default=d.finetune_head, choices=("grounding", "linear"),
                    help="REC region scorer: the pre-trained grounding head (expression as phrase) or ViLBERT's new linear head")
    ap.add_argument("--hidden-size", type=int, default=d.hidden_size)
    ap.add_argument("--num-layers", type=int, default=d.num_layers)
    ap.add_argument("--model", default=d.model, choices=("single", "dual"))
    ap.add_argument("--pretrain-arg", action="append", default=[], metavar="FLAG", help="extra trainer.train argument, repeatable (e.g. --pretrain-arg=--text-init --pretrain-arg=minilm)")
    ap.add_argument("--jobs", type=int, default=d.jobs, help="runs in parallel")
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    a = ap.parse_args(argv)
    teacher_args = a.teacher_arg if a.teacher_arg is not None else (d.teacher_args if a.teacher == "simulated" else [])
    return ExperimentConfig(
        work=a.work, variants=[v for v in a.variants.split(",") if v], pretrain_fractions=_floats(a.pretrain_fractions),
        finetune_fractions=_floats(a.finetune_fractions), seeds=[int(s) for s in a.seeds.split(",") if s], scratch=a.scratch,
        corpus_seed=a.corpus_seed, pretrain_images=a.pretrain_images, rec_images=a.rec_images, feature_dim=a.feature_dim,
        teacher=a.teacher, teacher_args=teacher_args, pretrain_steps=a.pretrain_steps, pretrain_batch=a.pretrain_batch,
        pretrain_lr=a.pretrain_lr, finetune_steps=a.finetune_steps, finetune_batch=a.finetune_batch, finetune_lr=a.finetune_lr, finetune_head=a.finetune_head,
        hidden_size=a.hidden_size, num_layers=a.num_layers, model=a.model, extra_pretrain_args=a.pretrain_arg, jobs=a.jobs, device=a.device,
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    md = run_grid(parse_args(args), shlex.join(["python", "-m", "trainer.experiment", *args]))
    print(md.read_text())


if __name__ == "__main__":
    main()
