"""The grid's statistics: results per run, gains over ``none`` per seed, growth with less data, and the verdict."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from trainer.experiment.config import EVAL_SPLITS, ExperimentConfig, NEEDS
from trainer.experiment.corpus import _frac


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
