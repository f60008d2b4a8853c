"""The alignment methods side by side (issue #14): same images, encoder, steps and fine-tuning; REC and VQA scores.

    python -m trainer.experiment.compare --work runs/compare                       # = make compare (REC + VQA)
    python -m trainer.experiment.compare --work W --seeds 0,1 --pretrain-steps 300  # smaller
    python -m trainer.experiment.compare --work W --tasks rec                      # REC only

| method | pre-training data | ``trainer.train --method`` |
|---|---|---|
| ``none`` | captions paired with images, no alignment loss | ``none`` |
| ``ssga`` | + the teacher's pseudo labels (grounding loss) | ``ssga`` |
| ``mu_vla`` | the same images and the same captions **with the pairing removed**: the retrieval stage pairs each image with the top-K captions by tag-sentence similarity | ``mu_vla`` (+ ``--retrieval``) |
| ``partial_ot`` | captions paired with images, partial OT between token and region states (no teacher) | ``partial_ot`` |
| ``ssga+partial_ot`` | pseudo labels + partial OT | ``ssga+partial_ot`` |

Every method pre-trains for the same number of steps at the same batch size (μ-VLA's batch is that many
images, each seen as up to three views) and each run is fine-tuned on every task of ``--tasks`` (the
grid's tasks and flag, default ``rec,vqa``) with the same settings; per task, the grid's statistics give
the score's mean ± s.e. over seeds and each method's gain over ``none`` paired by seed, with the grid's
2-s.e. rule. Costs: the label pipeline's and the retrieval stage's wall time, and each
method's training time per step (from ``losses.jsonl``).

Data and runs are built with the grid's helpers (:mod:`trainer.experiment.corpus`, ``jobs``: the task
data, the fine-tuning commands and runner) and reused on a re-run only when their settings are the same
(``spec.json``); REC's runs keep their directories (``finetune/METHOD_sSEED``), other tasks' are
``finetune/TASK/METHOD_sSEED``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.experiment.cli import _task_steps
from trainer.experiment.config import DEFAULT_TASKS, TASKS, ExperimentConfig, check_tasks
from trainer.experiment.corpus import Data, build_once, make_corpus, make_labels, make_regions, make_task_data, run_logged
from trainer.experiment.jobs import Finetune, _run_all, needs_run, run_finetunes
from trainer.experiment.stats import gains_by_seed

log = logging.getLogger("trainer.experiment")

METHODS = ("none", "ssga", "mu_vla", "partial_ot", "ssga+partial_ot")
LABELS = {
    "none": "no alignment loss",
    "ssga": "SSGA grounding loss (pseudo labels)",
    "mu_vla": "μ-VLA (unpaired, retrieval-built pairs, curriculum)",
    "partial_ot": "GroundedBERT partial OT (no teacher)",
    "ssga+partial_ot": "SSGA + partial OT",
}


@dataclass
class CompareConfig(ExperimentConfig):
    """The grid's settings (data, teacher, model, steps, tasks: :class:`ExperimentConfig`) plus the methods'."""

    work: str = "runs/compare"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    top_k: int = 5  # retrieved sentences per image (μ-VLA)
    pot_mass: float = 0.5  # partial OT's transported mass fraction s
    lambda_pot: float = 1.0
    mu_switch: tuple[float, float] = (1 / 3, 2 / 3)  # μ-VLA curriculum: region–phrase and image–sentence join at these shares of the steps

    def grid(self) -> ExperimentConfig:
        """The grid's config for its data helpers and fine-tuning commands (corpus seed, teacher, tasks, jobs)."""
        return ExperimentConfig(work=self.work, tasks=list(self.tasks), task_steps=dict(self.task_steps), corpus_seed=self.corpus_seed, teacher=self.teacher, teacher_args=list(self.teacher_args),
                                jobs=self.jobs, feature_dim=self.feature_dim, pretrain_images=self.pretrain_images, rec_images=self.rec_images,
                                finetune_steps=self.finetune_steps, finetune_batch=self.finetune_batch, finetune_lr=self.finetune_lr,
                                finetune_head=self.finetune_head, hidden_size=self.hidden_size, num_layers=self.num_layers, model=self.model,
                                device=self.device)


def unpaired_sentences(captions_tsv: Path, out: Path, seed: int) -> Path:
    """The corpus's captions, one per line, in a seeded order: the same sentences, the pairing removed."""
    texts = [line.split("\t")[0].strip() for line in captions_tsv.read_text().splitlines() if "\t" in line]
    order = np.random.default_rng([seed, 0x5E7]).permutation(len(texts))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(texts[i] + "\n" for i in order))
    return out


def make_retrieval(corpus: Data, regions: Data, out: Path, cfg: CompareConfig, logs: Path) -> Data:
    spec = {"product": "retrieval", "top_k": cfg.top_k, "sentences": {"captions": "all", "shuffle_seed": cfg.corpus_seed}, "regions": regions.spec}

    def build() -> None:
        sentences = unpaired_sentences(corpus.path / "captions.tsv", out.parent / "unpaired_sentences.txt", cfg.corpus_seed)
        run_logged([sys.executable, "-m", "pipelines.retrieval", "--regions", str(regions.path), "--sentences", str(sentences),
                    "--objects-vocab", str(corpus.path / "objects_vocab.txt"), "--out", str(out), "--top-k", str(cfg.top_k),
                    "--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={max(1, min(cfg.jobs, os.cpu_count() or 1))}"],
                   logs / f"{out.name}.log")

    build_once(out, spec, lambda: (out / "_MANIFEST.json").exists(), build)
    return Data(out, spec)


def retrieval_recall(corpus: Data, retrieval: Data) -> dict[str, Any]:
    """Recall@K of each image's true caption among its retrieved sentences, beside chance (the stage's own evaluator, as a CLI)."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pipelines.retrieval.evaluate", "--retrieval", str(retrieval.path), "--captions",
                        str(corpus.path / "captions.tsv")], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def pretrain_cmd(cfg: CompareConfig, method: str, regions: Path, labels: Path, retrieval: Path, out: Path, seed: int, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "trainer.train", "--regions", str(regions), "--labels", str(labels), "--out", str(out), "--method", method,
           "--steps", str(cfg.pretrain_steps), "--batch-size", str(cfg.pretrain_batch), "--lr", str(cfg.pretrain_lr),
           "--warmup-steps", str(max(1, cfg.pretrain_steps // 10)), "--seed", str(seed), "--model", cfg.model,
           "--hidden-size", str(cfg.hidden_size), "--num-layers", str(cfg.num_layers), "--lambda-gnd", "20", "--phrase-repr", "lstm", "--location", "5d",
           "--num-workers", "0", "--cpu-threads", str(threads), "--ckpt-every", str(max(1, cfg.pretrain_steps)), "--keep-ckpts", "1",
           "--log-every", "50", "--progress", "false", "--device", cfg.device]
    if "partial_ot" in method:
        cmd += ["--pot-mass", str(cfg.pot_mass), "--lambda-pot", str(cfg.lambda_pot)]
    if method == "mu_vla":
        a, b = (int(round(f * cfg.pretrain_steps)) for f in cfg.mu_switch)
        cmd += ["--retrieval", str(retrieval), "--mu-region-phrase-at", str(a), "--mu-image-sentence-at", str(b)]
    return cmd


def seconds_per_step(run: Path) -> float:
    """Median training time per step from ``losses.jsonl`` (examples / samples-per-second of each logged window)."""
    rows = [json.loads(x) for x in (run / "losses.jsonl").read_text().splitlines() if x.strip()]
    per = [r["examples"] / r["samples_per_s"] for r in rows if r.get("samples_per_s")]
    return float(statistics.median(per)) if per else float("nan")


def _timed(fn) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def _se(v: list[float]) -> float:
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def summarise(rows: list[dict], methods: list[str], tasks: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task, per method: the task's score (``rows``' ``score``, :func:`trainer.experiment.stats.collect`) mean ± s.e.
    over seeds, and the gain over ``none`` paired by seed (mean ± s.e.) with the grid's rule: BETTER / WORSE when
    beyond 2 s.e., NOT SHOWN otherwise. REC adds the swapped-text control."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in tasks:
        trows = [r for r in rows if r.get("task", "rec") == t]
        out[t] = {}
        for m in methods:
            mine = sorted((r for r in trows if r["variant"] == m), key=lambda r: r["seed"])
            score = [r["score"] for r in mine]
            g = list(gains_by_seed(trows, m, 1.0, 1.0, key="score").values()) if m != "none" else []
            s = {"n": len(score), "score": float(np.mean(score)) if score else float("nan"), "score_se": _se(score), "score_by_seed": score,
                 "n_eval": int(np.median([r["n_eval"] for r in mine])) if mine else 0}
            if t == "rec":
                s["swapped"] = float(np.mean([r["mean_acc_swapped_text"] for r in mine])) if mine else float("nan")
            if g:
                s.update(gain=float(np.mean(g)), gain_se=_se(g))
                s["verdict"] = ("INCONCLUSIVE (fewer than two seeds)" if not np.isfinite(s["gain_se"]) else "BETTER" if s["gain"] > 2 * s["gain_se"]
                                else "WORSE" if s["gain"] < -2 * s["gain_se"] else "NOT SHOWN")
            out[t][m] = s
    return out


def write_report(cfg: CompareConfig, summary: dict, costs: dict, path: Path, command: str) -> Path:
    pct = lambda x: "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"  # noqa: E731
    grid = cfg.grid()
    titles = " and ".join(TASKS[t].title for t in cfg.tasks)
    ft = "; ".join(f"{TASKS[t].title} {grid.steps_of(t)} steps × batch {grid.batch_of(t)}" + (f", `{cfg.finetune_head}` head" if t == "rec" else "")
                   for t in cfg.tasks)
    lines = [f"# Alignment methods compared: {titles} at matched steps and data (synthetic corpus)", "",
             f"Command: `{command}`  ",
             f"Pre-training: {cfg.pretrain_images} images, {cfg.pretrain_steps} steps × batch {cfg.pretrain_batch}, lr {cfg.pretrain_lr:g}; "
             f"{cfg.model}-stream, hidden {cfg.hidden_size}, {cfg.num_layers} layers. Fine-tuning from each pre-training run, on "
             f"{cfg.rec_images} disjoint images (every task's data is over their scenes), lr {cfg.finetune_lr:g}: {ft}. "
             f"Teacher `{cfg.teacher}` ({' '.join(cfg.teacher_args)}); partial OT s = {cfg.pot_mass:g}, λ_pot = {cfg.lambda_pot:g}; "
             f"μ-VLA top-{cfg.top_k} retrieval, curriculum switches at steps "
             f"{int(round(cfg.mu_switch[0] * cfg.pretrain_steps))} (+ region–phrase) and {int(round(cfg.mu_switch[1] * cfg.pretrain_steps))} (+ image–sentence). "
             f"Seeds {', '.join(map(str, cfg.seeds))}.", "",
             "Scores (%): " + "; ".join(f"{TASKS[t].title} = {TASKS[t].metric} (median {summary[t]['none']['n_eval']} examples per run)" for t in cfg.tasks)
             + ". ± = 1 s.e. over seeds. Gain over `none` paired by seed; verdict BETTER/WORSE beyond 2 s.e."
             + (" Swapped text (REC): accuracy when the expression names another object (lower = the model reads the text)." if "rec" in cfg.tasks else ""), ""]
    head = ["method"] + [f"{TASKS[t].title} {h}" for t in cfg.tasks for h in ("score", "gain (pts)", "verdict")]
    head += (["REC swapped text"] if "rec" in cfg.tasks else []) + ["train s/step"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in cfg.methods:
        cells = [f"{LABELS[m]} (`{m}`)"]
        for t in cfg.tasks:
            s = summary[t][m]
            cells += [f"{pct(s['score'])} ± {pct(s['score_se'])}", f"{100 * s['gain']:+.1f} ± {pct(s['gain_se'])}" if "gain" in s else "–",
                      s.get("verdict", "–")]
        if "rec" in cfg.tasks:
            cells.append(pct(summary["rec"][m]["swapped"]))
        cells.append(f"{costs['s_per_step'].get(m, float('nan')):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    rr = costs["retrieval_recall"]
    retrieval = (f"retrieval stage (MiniLM tag sentences + sentences, top-{cfg.top_k}, spaCy phrases) {costs['retrieval_s']:.0f} s (μ-VLA needs it); "
                 if rr else "retrieval stage not run (μ-VLA, which needs it, is not compared); ")
    lines += ["", f"Costs: label pipeline (teacher `{cfg.teacher}`) {costs['labels_s']:.0f} s (SSGA and SSGA + partial OT need it); " + retrieval
              + "`none` and partial OT need neither. "
              + (f"μ-VLA's weak pairs: the true caption is among an image's top {rr['k']} for "
                 f"{100 * rr['recall']:.1f} % of the captions (chance {100 * rr['random']:.1f} %). " if rr else "")
              + "Data times are of the invocation that built them. "
              "Training time per step is the median over logged windows on this machine, runs sharing its cores.", ""]
    path.write_text("\n".join(lines))
    return path


def finetune_dir(work: Path, task: str, method: str, seed: int) -> Path:
    """REC's runs keep the directories of the REC-only comparison (so they stay reusable); other tasks' go under ``finetune/TASK``."""
    return work / "finetune" / ("" if task == "rec" else task) / f"{method.replace('+', '_')}_s{seed}"


def run_compare(cfg: CompareConfig, command: str = "") -> Path:
    cfg.tasks = check_tasks(cfg.tasks)
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    if "none" not in cfg.methods:
        raise ValueError("the comparison needs the method 'none' (gains are measured over it)")
    work = Path(cfg.work)
    data, logs = work / "data", work / "logs"
    grid = cfg.grid()
    threads = max(1, (os.cpu_count() or 1) // max(1, cfg.jobs))
    pre_corpus = make_corpus(data / "pretrain_corpus", cfg.pretrain_images, cfg.corpus_seed, cfg.feature_dim, logs)
    rec_corpus = make_corpus(data / "rec_corpus", cfg.rec_images, cfg.corpus_seed + 1, cfg.feature_dim, logs)  # the downstream corpus, every task's scenes
    pre_regions = make_regions(pre_corpus, data / "pretrain_regions", logs)
    rec_regions = make_regions(rec_corpus, data / "rec_regions", logs)
    labels, labels_s = _timed(lambda: make_labels(pre_corpus, pre_regions, 1.0, data / "labels_full", grid, logs))
    retrieval, retrieval_s, recall = None, float("nan"), {}
    if "mu_vla" in cfg.methods:  # only μ-VLA reads it
        retrieval, retrieval_s = _timed(lambda: make_retrieval(pre_corpus, pre_regions, data / "retrieval", cfg, logs))
        recall = retrieval_recall(pre_corpus, retrieval)
    task_data = {t: make_task_data(t, rec_corpus, data, logs) for t in cfg.tasks}

    pre_jobs = []
    for m in cfg.methods:
        for s in cfg.seeds:
            out = work / "pretrain" / f"{m.replace('+', '_')}_s{s}"
            cmd = pretrain_cmd(cfg, m, pre_regions.path, labels.path, retrieval.path if retrieval else Path("-"), out, s, threads)
            done = (out / "latest.json").exists() and json.loads((out / "latest.json").read_text()).get("step") == cfg.pretrain_steps
            spec = {"labels": labels.spec, "retrieval": retrieval.spec} if retrieval else {"labels": labels.spec}
            if needs_run(cmd, work, out, done, data=spec):
                pre_jobs.append((cmd, out / "run.log"))
    _run_all(pre_jobs, cfg.jobs, "pretrain")

    runs = [Finetune(t, m, 1.0, 1.0, s, str(work / "pretrain" / f"{m.replace('+', '_')}_s{s}"), finetune_dir(work, t, m, s))
            for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]
    rows, _ = run_finetunes(grid, work, runs, task_data, rec_regions, threads)

    summary = summarise(rows, cfg.methods, cfg.tasks)
    previous = work / "compare.json"
    if previous.exists():  # data reused: keep the times of the invocation that built it
        old = json.loads(previous.read_text())["costs"]
        labels_s = old["labels_s"] if labels_s < 1.0 else labels_s
        retrieval_s = old.get("retrieval_s", retrieval_s) if retrieval and retrieval_s < 1.0 else retrieval_s
    costs = {"labels_s": labels_s, "retrieval_s": retrieval_s, "retrieval_recall": recall,
             "s_per_step": {m: float(np.mean([seconds_per_step(work / "pretrain" / f"{m.replace('+', '_')}_s{s}") for s in cfg.seeds])) for m in cfg.methods}}
    (work / "compare.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary, "costs": costs}, indent=2, sort_keys=True) + "\n")
    return write_report(cfg, summary, costs, work / "compare.md", command)


def parse_args(argv: list[str] | None = None) -> CompareConfig:
    d = CompareConfig()
    ap = argparse.ArgumentParser(prog="python -m trainer.experiment.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=d.work)
    ap.add_argument("--tasks", default=",".join(d.tasks),
                    help=f"comma list of {','.join(TASKS)} (default {','.join(DEFAULT_TASKS)}, as the grid's); every method's runs fine-tune on each")
    ap.add_argument("--task-steps", default="", metavar="TASK=N,...",
                    help="fine-tuning steps of non-REC tasks (default " + ", ".join(f"{t} {TASKS[t].steps}" for t in TASKS if t != "rec") + ")")
    ap.add_argument("--methods", default=",".join(d.methods), help=f"comma list of {list(METHODS)}")
    ap.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    for name in ("corpus_seed", "pretrain_images", "rec_images", "feature_dim", "pretrain_steps", "pretrain_batch", "finetune_steps",
                 "finetune_batch", "hidden_size", "num_layers", "top_k", "jobs"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("pretrain_lr", "finetune_lr", "pot_mass", "lambda_pot"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    ap.add_argument("--mu-switch", default=",".join(f"{x:.4g}" for x in d.mu_switch),
                    help="μ-VLA curriculum: shares of the steps where region–phrase and image–sentence join (default %(default)s)")
    ap.add_argument("--teacher", default=d.teacher)
    ap.add_argument("--teacher-arg", action="append", default=None, metavar="K=V")
    ap.add_argument("--finetune-head", default=d.finetune_head, choices=("grounding", "linear"))
    ap.add_argument("--model", default=d.model, choices=("single", "dual"))
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    a = ap.parse_args(argv)
    switch = tuple(float(x) for x in a.mu_switch.split(","))
    if len(switch) != 2 or not 0 <= switch[0] <= switch[1] <= 1:
        ap.error(f"--mu-switch needs two shares 0 <= a <= b <= 1, got {a.mu_switch!r}")
    tasks = check_tasks([t for t in a.tasks.split(",") if t])
    values = {k: getattr(a, k) for k in vars(a) if k not in ("tasks", "task_steps", "methods", "seeds", "mu_switch", "teacher_arg")}
    teacher_args = a.teacher_arg if a.teacher_arg is not None else (d.teacher_args if a.teacher == "simulated" else [])
    return CompareConfig(**values, tasks=tasks, task_steps=_task_steps(a.task_steps), methods=[m for m in a.methods.split(",") if m], seeds=[int(s) for s in a.seeds.split(",") if s],
                         mu_switch=switch, teacher_args=teacher_args)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_args(args)
        md = run_compare(cfg, shlex.join(["python", "-m", "trainer.experiment.compare", *args]))
    except ValueError as e:  # a user's mistake: one line, exit 2 (as the grid's CLI)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(md.read_text())


if __name__ == "__main__":
    main()
