"""The grid's report: ``results.md`` (tables, verdict, label quality) and ``results.png``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from trainer.experiment.config import EVAL_SPLITS, ExperimentConfig, LABELS, NEEDS
from trainer.experiment.corpus import _frac
from trainer.experiment.stats import _cell, _ms, _pct, gains


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
    teachers = sorted({q["teacher"] for q in quality.values()})  # from the labels' manifests: what the runs trained on
    out += ["", f"Pseudo labels (teacher {', '.join(f'`{t}`' for t in teachers)}, from the labels' manifests), precision/recall of M against the corpus ground truth at IoU ≥ 0.5:", "",
            "| pre-training data | teacher | images labelled | phrases | positive pairs | precision | recall | F1 |", "|---|---|---|---|---|---|---|---|"]
    for pf, q in quality.items():
        f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        out.append(f"| {_frac(pf)} | `{q['teacher']}` | {q['images_labelled']} | {q['phrases']} | {q['positives']} | {f(q['precision'])} | {f(q['recall'])} | {f(q['f1'])} |")
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
