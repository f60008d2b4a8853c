"""The grid's report: ``results.md`` (the tasks side by side, verdict and power per task, REC's details, label quality) and ``results.png``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from trainer.experiment.config import EVAL_SPLITS, LABELS, NEEDS, TASKS, ExperimentConfig
from trainer.experiment.corpus import _frac
from trainer.experiment.stats import DELTA, Z, _cell, _ms, _pct, gains


def task_rows(rows: list[dict], task: str) -> list[dict]:
    """The rows of one task (a row without ``task`` is REC's, as older grids wrote them)."""
    return [r for r in rows if r.get("task", "rec") == task]


def _n_eval(rows: list[dict], task: str) -> int:
    ns = [int(r["n_eval"]) for r in task_rows(rows, task) if r.get("n_eval")]
    return int(np.median(ns)) if ns else 0


def write_markdown(rows: list[dict], cfg: ExperimentConfig, quality: dict[float, dict], timing: dict[str, Any],
                   verdicts: dict[str, tuple[str, dict]], power: dict[str, dict], path: Path, command: str = "") -> Path:
    """``results.md``: the tasks' scores side by side per cell, gains over ``none``, the verdict and the power
    calculation per task, REC's details (control, per split, by need) and the pseudo labels' quality."""
    cells = [(pf, ff) for pf in cfg.pretrain_fractions for ff in cfg.finetune_fractions]
    variants = cfg.variants + (["scratch"] if cfg.scratch else [])
    tasks = [t for t in cfg.tasks if task_rows(rows, t)]
    out = [f"# Data-efficiency grid: {', '.join(TASKS[t].title for t in tasks)} (synthetic corpus)", ""]
    out += [f"Command: `{command or 'python -m trainer.experiment (called from Python)'}`  ",
            f"{'Wall time of the invocation that ran these runs (this one reused them)' if timing.get('reused') else 'Wall time'}: {timing['total_s']:.0f} s "
            f"(data {timing['data_s']:.0f} s, pre-training {timing['pretrain_s']:.0f} s for {timing['pretrain_runs']} runs, "
            f"fine-tuning {timing['finetune_s']:.0f} s for {timing['finetune_runs']} runs; runs already done are reused).", ""]
    out += [f"Pre-training (shared by the tasks): {cfg.pretrain_images} images, {cfg.pretrain_steps} steps × batch {cfg.pretrain_batch}, "
            f"lr {cfg.pretrain_lr:g}; {cfg.model}-stream, hidden {cfg.hidden_size}, {cfg.num_layers} layers. Fine-tuning, lr {cfg.finetune_lr:g}: "
            + "; ".join(f"{TASKS[t].title} {cfg.steps_of(t)} steps × batch {cfg.batch_of(t)}" + (f", `{cfg.finetune_head}` head" if t == "rec" else "")
                        for t in tasks)
            + f". Downstream corpus: {cfg.rec_images} images (disjoint from pre-training); every task's data is over its scenes.", ""]
    out += ["Scores: " + "; ".join(f"{TASKS[t].title} = {TASKS[t].metric} (about {_n_eval(rows, t)} evaluation examples)" for t in tasks) + ".", ""]
    head = "| variant | pre | ft | " + " | ".join(TASKS[t].title for t in tasks) + " |"
    sep = "|---|---|---|" + "---|" * len(tasks)
    out += [f"Score (%), mean ± std over {len(cfg.seeds)} seed(s), the tasks side by side:", "", head, sep]
    for v in variants:
        for pf, ff in cells:
            if v == "scratch" and pf != cfg.pretrain_fractions[0]:
                continue  # no pre-training: one row per fine-tuning fraction
            vals = [_ms([r["score"] for r in _cell(task_rows(rows, t), v, pf, ff)]) for t in tasks]
            out.append(f"| {LABELS[v]} (`{v}`) | {'–' if v == 'scratch' else _frac(pf)} | {_frac(ff)} | " + " | ".join(vals) + " |")
    out += ["", "Gain over `none` (percentage points, paired by seed, mean ± std):", "", head, sep]
    for v in cfg.variants:
        if v != "none":
            for pf, ff in cells:
                out.append(f"| {LABELS[v]} (`{v}`) | {_frac(pf)} | {_frac(ff)} | "
                           + " | ".join(_ms(gains(task_rows(rows, t), v, pf, ff, "score")) for t in tasks) + " |")
    out += ["", "**Verdict (paper: gains grow as data shrinks)**, per task:", ""]
    for t in tasks:
        out += [f"*{TASKS[t].title}*: {verdicts[t][0]}", ""]
    out += power_section(tasks, power)
    if "rec" in tasks:
        out += _rec_details(task_rows(rows, "rec"), cfg, cells, variants)
    out += _label_section(quality)
    out += ["", "Files: `results.csv` (one row per run, `task` and `score` columns), `results.png` (one panel per task), runs under `pretrain/` "
            "(shared by the tasks) and `finetune/` (REC) / `finetune/TASK/`, logs under `logs/` and in each run.", ""]
    path.write_text("\n".join(out))
    return path


def power_section(tasks: list[str], power: dict[str, dict]) -> list[str]:
    """The power calculation (:func:`trainer.experiment.stats.seeds_needed`) per task and axis, with its formula."""
    out = ["**Power**: seeds and evaluation size needed to resolve a growth of "
           f"{100 * DELTA:g} points at ±{Z:g} s.e. Per data axis: sd = the measured between-seed s.d. of one seed's growth; "
           "sd_eval = sqrt(U/n), the binomial evaluation noise in it at the measured evaluation size n, with "
           "U = Σ over the two cells of p_none(1−p_none) + Σ_v p_v(1−p_v)/V²; sd_train² = sd² − U/n (training noise, held fixed). "
           "Seeds k(n) = ceil(z²(sd_train² + U/n)/δ²), z = 2, δ = 0.02, at least 2; recommended: the smallest evaluation size "
           "whose k is within 10 % (at least one seed) of k at an infinite evaluation set.", ""]
    rows = []
    for t in tasks:
        for axis, a in power.get(t, {}).get("axes", {}).items():
            ks = ", ".join(f"×{b['scale']}: {b['seeds']}" for b in a["by_eval"])
            rec = a["recommended"]
            rows.append(f"| {TASKS[t].title} | {axis} | {100 * a['sd_growth']:.1f} | {100 * a['sd_eval']:.1f} | {100 * a['sd_train']:.1f} | "
                        f"{a['n_eval']} | {ks} | {rec['seeds']} seeds at n = {rec['n_eval']} (×{rec['scale']}) |")
    if not rows:
        return out + ["Not computed: fewer than two seeds (no between-seed variance measured).", ""]
    out += ["| task | axis | sd (pts) | sd_eval (pts) | sd_train (pts) | n | seeds by evaluation size (× n) | recommended |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]
    needs = [f"{TASKS[t].title} **{p['need']['seeds']} seeds at ×{p['need']['scale']}** (n = {p['need']['n_eval']})"
             for t in tasks if (p := power.get(t, {})).get("need")]
    return out + ["Needed over all axes: " + "; ".join(needs) + ". The evaluation set grows with the downstream corpus "
                  "(`--rec-images` × the scale). With few seeds, sd itself is uncertain (its 95 % interval spans a factor of "
                  "several at 2–3 seeds), so read these as orders of magnitude.", ""]


def _rec_details(rows: list[dict], cfg: ExperimentConfig, cells: list[tuple[float, float]], variants: list[str]) -> list[str]:
    head = "| variant | " + " | ".join(f"pre {_frac(pf)} / ft {_frac(ff)}" for pf, ff in cells) + " |"
    out = ["REC details. Accuracy (%) = top-scored proposal with IoU ≥ 0.5, mean of val / testA / testB.", "",
           "Control: does the model read the expression? Accuracy (%) when each expression is swapped for one naming "
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
    return out + [""]


def _label_section(quality: dict[float, dict]) -> list[str]:
    teachers = sorted({q["teacher"] for q in quality.values()})  # from the labels' manifests: what the runs trained on
    out = [f"Pseudo labels (teacher {', '.join(f'`{t}`' for t in teachers)}, from the labels' manifests), precision/recall of M against the corpus ground truth at IoU ≥ 0.5:", "",
           "| pre-training data | teacher | images labelled | phrases | positive pairs | precision | recall | F1 |", "|---|---|---|---|---|---|---|---|"]
    for pf, q in quality.items():
        f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        out.append(f"| {_frac(pf)} | `{q['teacher']}` | {q['images_labelled']} | {q['phrases']} | {q['positives']} | {f(q['precision'])} | {f(q['recall'])} | {f(q['f1'])} |")
    return out


def plot(rows: list[dict], cfg: ExperimentConfig, path: Path) -> None:
    """One panel per task: score per cell, a bar per variant (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(pf, ff) for pf in cfg.pretrain_fractions for ff in cfg.finetune_fractions]
    variants = cfg.variants + (["scratch"] if cfg.scratch else [])
    tasks = [t for t in cfg.tasks if task_rows(rows, t)]
    fig, axes = plt.subplots(1, len(tasks), figsize=((1.6 + 1.8 * len(cells)) * len(tasks), 3.8), squeeze=False)
    width = 0.8 / len(variants)
    for ax, t in zip(axes[0], tasks):
        rs = task_rows(rows, t)
        for i, v in enumerate(variants):
            means, stds = [], []
            for pf, ff in cells:
                a = np.asarray([r["score"] for r in _cell(rs, v, pf, ff)], float) * 100
                means.append(a.mean() if a.size else np.nan)
                stds.append(a.std(ddof=1) if a.size > 1 else 0.0)
            ax.bar(np.arange(len(cells)) + (i - (len(variants) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=LABELS[v])
        ax.set_xticks(np.arange(len(cells)), [f"pre {_frac(pf)}\nft {_frac(ff)}" for pf, ff in cells])
        ax.set_ylabel(f"{TASKS[t].title}: {TASKS[t].metric} (%)", fontsize=8)
        ax.set_title(TASKS[t].title)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("Downstream scores vs. pre-training / fine-tuning data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
