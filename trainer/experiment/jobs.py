"""The grid's runs: their commands, the cache of finished runs (``spec.json``), and the parallel job runner."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from trainer.experiment.config import TASKS, VARIANTS, ExperimentConfig, check_tasks
from trainer.experiment.corpus import Data, fraction_name, label_quality, make_corpus, make_labels, make_regions, make_task_data, run_logged
from trainer.experiment.report import plot, write_markdown
from trainer.experiment.stats import collect, power_report, verdict, write_csv

log = logging.getLogger("trainer.experiment")


def pretrain_cmd(cfg: ExperimentConfig, variant: str, regions: Path, labels: Path, out: Path, seed: int, threads: int) -> list[str]:
    v = VARIANTS[variant]
    return [sys.executable, "-m", "trainer.train", "--regions", str(regions), "--labels", str(labels), "--out", str(out),
            "--steps", str(cfg.pretrain_steps), "--batch-size", str(cfg.pretrain_batch), "--lr", str(cfg.pretrain_lr),
            "--warmup-steps", str(max(1, cfg.pretrain_steps // 10)), "--seed", str(seed), "--model", cfg.model,
            "--hidden-size", str(cfg.hidden_size), "--num-layers", str(cfg.num_layers),
            "--lambda-gnd", str(v["lambda_gnd"]), "--phrase-repr", v["phrase_repr"], "--location", v["location"],
            "--num-workers", "0", "--cpu-threads", str(threads), "--ckpt-every", str(max(1, cfg.pretrain_steps)), "--keep-ckpts", "1",
            "--log-every", "50", "--progress", "false", "--device", cfg.device, *cfg.extra_pretrain_args]


def task_cmd(cfg: ExperimentConfig, task: str, init: str, task_data: Path, regions: Path, out: Path, fraction: float, seed: int, threads: int,
             model_config: Path | None = None) -> list[str]:
    """The fine-tuning command of ``task`` (a :data:`TASKS` name) from ``init`` (a pre-training run dir or "none")."""
    t = TASKS[task]
    cmd = [sys.executable, "-m", t.module, t.data_flag, str(task_data), "--regions", str(regions), "--init", init, "--out", str(out),
           "--train-fraction", str(fraction), "--seed", str(seed), "--steps", str(cfg.steps_of(task)), "--batch-size", str(cfg.batch_of(task)),
           "--lr", str(cfg.finetune_lr), *t.run_args]
    if task == "rec":
        cmd += ["--head", cfg.finetune_head]
    cmd += ["--cpu-threads", str(threads), "--device", cfg.device, "--no-progress"]
    return cmd + (["--model-config", str(model_config)] if model_config else [])


def finetune_cmd(cfg: ExperimentConfig, init: str, refer: Path, regions: Path, out: Path, fraction: float, seed: int, threads: int,
                 model_config: Path | None = None) -> list[str]:
    """REC's fine-tuning command (:func:`task_cmd` with ``task="rec"``)."""
    return task_cmd(cfg, "rec", init, refer, regions, out, fraction, seed, threads, model_config)


@dataclass(frozen=True)
class Finetune:
    """One planned fine-tuning run: what it is (task, variant, data fractions, seed), what it starts from, where it writes."""

    task: str
    variant: str
    pretrain_fraction: float
    finetune_fraction: float
    seed: int
    init: str  # a pre-training run directory, or "none" (random init from model_config)
    out: Path
    model_config: Path | None = None

    def as_run(self) -> dict[str, Any]:
        """The dict :func:`trainer.experiment.stats.collect` reads."""
        return {"task": self.task, "variant": self.variant, "pretrain_fraction": self.pretrain_fraction,
                "finetune_fraction": self.finetune_fraction, "seed": self.seed, "dir": self.out}


def run_finetunes(cfg: ExperimentConfig, work: Path, runs: list[Finetune], task_data: dict[str, Data], regions: Data,
                  threads: int) -> tuple[list[dict[str, Any]], int]:
    """Run the fine-tunings of ``runs`` not already done with the same settings (``cfg.jobs`` at a time), then
    collect one result row per run: ``(rows, number of runs launched)``. ``task_data``: each task's data
    (:func:`trainer.experiment.corpus.make_task_data`) over the downstream corpus whose shards are ``regions``.
    """
    jobs = []
    for r in runs:
        data = task_data[r.task]
        cmd = task_cmd(cfg, r.task, r.init, data.path, regions.path, r.out, r.finetune_fraction, r.seed, threads, r.model_config)
        # REC's data spec is the one older grids wrote, so their finished REC runs stay reusable
        spec = {"corpus": data.spec["corpus"], "regions": regions.spec} if r.task == "rec" else {"task_data": data.spec, "regions": regions.spec}
        upstream = None if r.init == "none" else Path(r.init)
        if needs_run(cmd, work, r.out, (r.out / "results.json").exists(), upstream, data=spec):
            jobs.append((cmd, r.out / "run.log"))
    _run_all(jobs, cfg.jobs, "finetune")
    return collect([r.as_run() for r in runs]), len(jobs)


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


def resolved_config(cmd: list[str], work: Path) -> dict[str, Any] | None:
    """Every setting ``cmd`` runs with, defaults included, as its module parses them (``python -m M``
    with ``M.parse_args``, or the module its ``main`` comes from). Part of a run's spec, so that a changed
    default (a newer trainer) redoes the runs it changes, as a changed flag does. None for a command
    that is not one of ours or does not parse (the run itself then says why)."""
    if len(cmd) < 3 or cmd[1] != "-m":
        return None
    try:
        mod = importlib.import_module(cmd[2])
        parse = getattr(mod, "parse_args", None) or getattr(importlib.import_module(getattr(mod, "main").__module__), "parse_args")
        with contextlib.redirect_stderr(io.StringIO()):
            cfg = parse(cmd[3:])
    except (ImportError, AttributeError, SystemExit, ValueError):
        return None
    if not is_dataclass(cfg):
        return None
    values = {k: v for k, v in asdict(cfg).items() if k != "cpu_threads"}  # the thread count is not a setting
    return json.loads(json.dumps(values, default=str).replace(json.dumps(str(work))[1:-1], "<work>"))


def needs_run(cmd: list[str], work: Path, out: Path, complete: bool, upstream: Path | None = None, data: dict | None = None) -> bool:
    """Whether ``cmd`` must run into ``out``: not when a complete run of the same spec is there.

    ``upstream``: the run directory this one starts from (a fine-tuning's pre-training run); its
    spec is part of this one's, so a redone pre-training redoes the fine-tunings made from it.
    ``data``: the specs of the data it reads (:class:`trainer.experiment.corpus.Data`), part of its
    spec too, since rebuilt data keeps its directory (so the command alone would not change).

    The spec holds the settings the command resolves to (:func:`resolved_config`), so a run made
    before a default changed is redone too.

    A run directory made by another spec (other steps, learning rate, head, data…) is removed first,
    so a changed flag can never reuse a stale result, nor resume a checkpoint of other settings. A
    partial run of the same spec is kept: the trainer resumes it exactly.
    """
    spec_file = out / "spec.json"
    resolved = resolved_config(cmd, work)
    spec = (run_spec(cmd, work) + ([] if resolved is None else [{"resolved": resolved}]) + ([] if data is None else [{"data": data}])
            + ([] if upstream is None else json.loads((upstream / "spec.json").read_text())))
    if spec_file.exists() and json.loads(spec_file.read_text()) == spec:
        return not complete
    if out.exists():
        log.info("%s: made with other settings, redoing it", out)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return True


def pretrain_dir(work: Path, variant: str, pf: float, seed: int) -> Path:
    return work / "pretrain" / f"{variant}_p{fraction_name(pf)}_s{seed}"


def run_pretraining(cfg: ExperimentConfig, work: Path, regions: Data, labels: dict[float, Data], threads: int) -> int:
    """Every (variant, pre-training fraction, seed) run of ``cfg`` not already done; returns how many ran.
    Pre-training is task independent: every task's fine-tunings start from these runs."""
    jobs = []
    for v in cfg.variants:
        for pf in cfg.pretrain_fractions:
            for s in cfg.seeds:
                out = pretrain_dir(work, v, pf, s)
                cmd = pretrain_cmd(cfg, v, regions.path, labels[pf].path, out, s, threads)
                if needs_run(cmd, work, out, _pretrain_done(out, cfg.pretrain_steps), data={"labels": labels[pf].spec}):
                    jobs.append((cmd, out / "run.log"))
    _run_all(jobs, cfg.jobs, "pretrain")
    return len(jobs)


def grid_finetunes(cfg: ExperimentConfig, work: Path, task: str, scratch_cfg: Path | None) -> list[Finetune]:
    """The grid's fine-tunings of ``task``: every variant × pre-training fraction × fine-tuning fraction × seed,
    plus the no-pre-training floor per fine-tuning fraction and seed when ``scratch_cfg`` is given.
    REC's run directories keep the names older grids gave them (``finetune/TAG``); other tasks' are ``finetune/TASK/TAG``."""
    root = work / "finetune" / ("" if task == "rec" else task)
    runs = []
    for ff in cfg.finetune_fractions:
        for s in cfg.seeds:
            cells = [(v, pf) for v in cfg.variants for pf in cfg.pretrain_fractions] + ([("scratch", 0.0)] if scratch_cfg else [])
            for v, pf in cells:
                tag = f"{v}_p{fraction_name(pf) if v != 'scratch' else 'none'}_f{fraction_name(ff)}_s{s}"
                init = "none" if v == "scratch" else str(pretrain_dir(work, v, pf, s))
                runs.append(Finetune(task, v, pf, ff, s, init, root / tag, scratch_cfg if v == "scratch" else None))
    return runs


def run_grid(cfg: ExperimentConfig, command: str = "") -> Path:
    """Everything: data, pre-training, fine-tuning per task, tables and plot. Returns ``WORK/results.md``."""
    t0 = time.perf_counter()
    work = Path(cfg.work)
    data, logs = work / "data", work / "logs"
    threads = max(1, (os.cpu_count() or 1) // max(1, cfg.jobs))
    cfg.tasks = check_tasks(cfg.tasks)
    bad = [v for v in cfg.variants if v not in VARIANTS or v == "scratch"]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {[v for v in VARIANTS if v != 'scratch']} (scratch: --scratch)")
    if "none" not in cfg.variants:
        log.warning("variant 'none' is not in the grid: gains over it cannot be computed")

    log.info("data: corpora, region shards, pseudo labels (%s teacher), task data (%s)", cfg.teacher, ", ".join(cfg.tasks))
    pre_corpus = make_corpus(data / "pretrain_corpus", cfg.pretrain_images, cfg.corpus_seed, cfg.feature_dim, logs)
    rec_corpus = make_corpus(data / "rec_corpus", cfg.rec_images, cfg.corpus_seed + 1, cfg.feature_dim, logs)  # the downstream corpus, every task's scenes
    pre_regions = make_regions(pre_corpus, data / "pretrain_regions", logs)
    rec_regions = make_regions(rec_corpus, data / "rec_regions", logs)
    labels, quality = {}, {}
    for pf in cfg.pretrain_fractions:
        labels[pf] = make_labels(pre_corpus, pre_regions, pf, data / f"labels_{fraction_name(pf)}", cfg, logs)
        quality[pf] = label_quality(labels[pf].path)  # the labels actually used, whatever the command line says
    task_data = {t: make_task_data(t, rec_corpus, data, logs) for t in cfg.tasks}
    t_data = time.perf_counter() - t0

    log.info("pre-training: %d variants x %d data fractions x %d seeds (shared by the tasks)", len(cfg.variants), len(cfg.pretrain_fractions), len(cfg.seeds))
    n_pre = run_pretraining(cfg, work, pre_regions, labels, threads)
    t_pre = time.perf_counter() - t0 - t_data

    log.info("fine-tuning and evaluation: %s", ", ".join(cfg.tasks))
    scratch_cfg = work / "pretrain" / "scratch_config.json"
    if cfg.scratch:
        scratch_cfg.parent.mkdir(parents=True, exist_ok=True)
        scratch_cfg.write_text(json.dumps({"model": cfg.model, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                                           "location": VARIANTS["scratch"]["location"]}, indent=2) + "\n")
    runs = [r for t in cfg.tasks for r in grid_finetunes(cfg, work, t, scratch_cfg if cfg.scratch else None)]
    rows, n_ft = run_finetunes(cfg, work, runs, task_data, rec_regions, threads)
    t_ft = time.perf_counter() - t0 - t_data - t_pre

    write_csv(rows, work / "results.csv")
    timing = {"data_s": round(t_data, 1), "pretrain_s": round(t_pre, 1), "finetune_s": round(t_ft, 1), "total_s": round(time.perf_counter() - t0, 1),
              "pretrain_runs": n_pre, "finetune_runs": n_ft}
    previous = work / "experiment.json"
    if not n_pre and not n_ft and previous.exists():  # everything reused: keep the timing of the run that did the work
        timing = {**json.loads(previous.read_text())["timing"], "reused": True}
    plot(rows, cfg, work / "results.png")
    verdicts = {t: verdict([r for r in rows if r["task"] == t], cfg, key="score") for t in cfg.tasks}
    power = {t: power_report([r for r in rows if r["task"] == t], cfg, verdicts[t][1]) for t in cfg.tasks}
    md = write_markdown(rows, cfg, quality, timing, verdicts, power, work / "results.md", command)
    (work / "experiment.json").write_text(json.dumps({"config": asdict(cfg), "timing": timing, "label_quality": {str(k): v for k, v in quality.items()},
                                                      "verdict": {t: v[1] for t, v in verdicts.items()}, "power": power},
                                                     indent=2, sort_keys=True) + "\n")
    log.info("wrote %s, %s, %s in %.0f s", work / "results.md", work / "results.csv", work / "results.png", timing["total_s"])
    return md


def _run_all(jobs: list[tuple[list[str], Path]], parallel: int, what: str) -> None:
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool, tqdm(total=len(jobs), desc=what, unit="run", dynamic_ncols=True) as bar:
        futures = [pool.submit(run_logged, cmd, lf) for cmd, lf in jobs]
        for f in futures:
            f.result()  # re-raises the first failure with its log tail
            bar.update(1)


# ---------------------------------------------------------------------------------------------
# Results
