"""The grid's statistics: results per run, gains over ``none`` per seed, growth with less data, and the verdict."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from trainer.experiment.config import EVAL_SPLITS, ExperimentConfig, NEEDS
from trainer.experiment.corpus import _frac


def collect(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fine-tuning run (``run["task"]``, default "rec"): ``score`` (the task's headline metric,
    0..1) and ``n_eval`` (the examples it is a mean over), beside the task's own details (REC: accuracy
    ≥0.5 and >0.5 and oracle per split, by need, the swapped-text control; VQA: per answer type; VCR:
    Q→A, QA→R; NLVR2: consistency; SNLI-VE: per class)."""
    rows = []
    for r in runs:
        task = r.get("task", "rec")
        res = json.loads((r["dir"] / "results.json").read_text())
        row = {"task": task, **{k: r[k] for k in ("variant", "pretrain_fraction", "finetune_fraction", "seed")}}
        row.update(_rec_row(res) if task == "rec" else _task_row(task, res))
        rows.append(row)
    return rows


def _rec_row(res: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"train_expressions": res["train_expressions"], "train_acc": res["train_acc"]}
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
    row["score"] = row["mean_acc"]
    row["n_eval"] = sum(int(res["splits"].get(s, {}).get("n") or 0) for s in EVAL_SPLITS)
    return row


def _task_row(task: str, res: dict[str, Any]) -> dict[str, Any]:
    """The headline metric of a VQA / VCR / NLVR2 / SNLI-VE results.json (percent there) as a fraction."""
    acc = res["accuracy"]
    if task == "vqa":
        row = {"score": acc["overall"] / 100, **{f"vqa_{k.replace('/', '_')}_acc": v / 100 for k, v in acc["per_answer_type"].items()}}
    elif task == "vcr":
        row = {"score": acc["q2ar"] / 100, "vcr_q2a_acc": acc["q2a"] / 100, "vcr_qa2r_acc": acc["qa2r"] / 100}
    elif task == "nlvr2":
        row = {"score": acc["accuracy"] / 100, "nlvr2_consistency": acc["consistency"] / 100}
    elif task == "snli_ve":
        row = {"score": acc["accuracy"] / 100, **{f"snli_ve_{k}_acc": v / 100 for k, v in acc["per_class"].items()}}
    else:
        raise ValueError(f"no metric for task {task!r}")
    return {**row, "n_eval": int(acc["n"])}


def _mean_over_splits(row: dict[str, Any], key: str) -> float:
    """Mean of a metric over val/testA/testB, leaving out splits a small corpus lacks."""
    vals = [v for v in (row[f"{s}_{key}"] for s in EVAL_SPLITS) if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One line per run; the columns are the union over the tasks' rows (a column another task lacks is empty)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k.endswith(("acc", "strict", "oracle", "text", "score", "consistency")) else v) for k, v in r.items()})


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


def growth(rows: list[dict], variants: list[str], big: tuple[float, float], small: tuple[float, float], key: str = "mean_acc") -> dict[str, float]:
    """How much the gain over ``none`` grows from cell ``big`` to cell ``small`` (each ``(pf, ff)``).

    Paired by seed: for each seed, ``gain(v, small) - gain(v, big)`` averaged over the grounding
    variants; ``se`` is the standard error of the mean over seeds. The seed is the unit of
    replication because every variant's gain in a seed shares that seed's ``none`` run.
    """
    per_seed: dict[int, list[tuple[float, float]]] = {}
    for v in variants:
        a, b = gains_by_seed(rows, v, *big, key), gains_by_seed(rows, v, *small, key)
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


def verdict(rows: list[dict], cfg: ExperimentConfig, key: str = "mean_acc") -> tuple[str, dict[str, dict[str, Any]]]:
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
    seen = {full}
    for k, cell in list(axes.items()):  # a grid with one pre-training (or fine-tuning) fraction: "both" is the other axis again
        if cell in seen:
            del axes[k]
        seen.add(cell)
    if "none" not in cfg.variants or not grounding or not axes:
        return "not testable with this grid (needs 'none', a grounding variant and two data sizes)", {}
    nums, lines = {}, []
    for axis, cell in axes.items():
        g = growth(rows, grounding, full, cell, key)
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


# ---------------------------------------------------------------------------------------------
# Power: how many seeds, how large an evaluation set, to resolve a growth of DELTA

DELTA = 0.02  # the growth to resolve: 2 accuracy points
Z = 2.0  # resolved = DELTA is at least Z standard errors
EVAL_SCALES = (1, 2, 4, 8, 16, 32)  # evaluation sizes tried, as multiples of the measured one


def eval_variance_unit(p_none: tuple[float, float], p_variants: tuple[list[float], list[float]]) -> float:
    """``U`` such that the evaluation noise of one seed's growth estimate is ``U / n`` at ``n`` eval examples per run.

    One seed's growth is ``d = [mean_v a(v, small) - a(none, small)] - [mean_v a(v, big) - a(none, big)]``
    over ``V`` grounding variants. Each accuracy ``a`` is a mean over ``n`` examples, taken as independent
    binomial: ``Var(a) = p(1-p)/n``. So ``U = sum over the two cells of p_none(1-p_none) + (1/V²) sum_v p_v(1-p_v)``.
    ``p_none``: none's accuracy in (big, small); ``p_variants``: the variants' in (big, small).
    (An upper bound twice over: all runs score the same examples, which correlates their errors and
    shrinks the variance of differences, and VQA's soft accuracy varies less than a 0/1 one of the same mean.)
    """
    u = 0.0
    for pn, pv in zip(p_none, p_variants):
        u += pn * (1 - pn) + sum(p * (1 - p) for p in pv) / len(pv) ** 2
    return u


def seeds_needed(sd_growth: float, n_eval: int, unit: float, delta: float = DELTA, z: float = Z,
                 scales: tuple[int, ...] = EVAL_SCALES) -> dict[str, Any]:
    """Seeds needed to resolve a growth of ``delta`` at ``z`` standard errors, per evaluation size.

    ``sd_growth``: the measured between-seed standard deviation of one seed's growth estimate, at ``n_eval``
    evaluation examples per run; ``unit``: :func:`eval_variance_unit`. The variance splits into training
    noise and evaluation noise, ``sd² = σ²_train + U/n_eval``, so ``σ²_train = max(0, sd² - U/n_eval)``
    (held fixed as the evaluation grows: conservative, a larger downstream corpus also trains on more).
    With ``k`` seeds at ``n`` examples the growth's s.e. is ``sqrt((σ²_train + U/n) / k)``, and ``delta`` is
    resolved when ``z · s.e. ≤ delta``:

        k(n) = ceil(z² (σ²_train + U/n) / delta²), at least 2 (a standard error needs two seeds).

    Returns ``sd_train``, ``sd_eval`` (at ``n_eval``), ``by_eval`` (``[{"n_eval", "seeds"}]`` for ``n_eval × scales``),
    ``floor`` (the seeds at an infinite evaluation set) and ``recommended``: the smallest evaluation size whose
    seed count is within 10 % (and at least one seed) of the floor (past it, evaluation noise costs less than a
    tenth of the seeds), or the largest one tried.
    """
    var_eval = unit / n_eval
    var_train = max(0.0, sd_growth**2 - var_eval)

    def k(var: float) -> int:
        return max(2, math.ceil(round(z**2 * var / delta**2, 9)))  # round: 17.000000000000004 is 17

    by_eval = [{"scale": m, "n_eval": m * n_eval, "seeds": k(var_train + unit / (m * n_eval))} for m in scales]
    floor = k(var_train)
    rec = next((b for b in by_eval if b["seeds"] <= max(floor + 1, math.floor(1.1 * floor))), by_eval[-1])
    return {"sd_growth": sd_growth, "sd_train": math.sqrt(var_train), "sd_eval": math.sqrt(var_eval), "n_eval": n_eval,
            "by_eval": by_eval, "floor": floor, "recommended": rec, "delta": delta, "z": z}


def power_report(rows: list[dict], cfg: ExperimentConfig, verdict_nums: dict[str, dict[str, Any]], key: str = "score") -> dict[str, Any]:
    """:func:`seeds_needed` for each data axis of one task's ``rows`` (the growths of :func:`verdict`), and the
    grid's need: the largest recommended seed count and evaluation scale over the axes. Empty axes when fewer
    than two seeds were run (no between-seed variance measured)."""
    grounding = [v for v in cfg.variants if v != "none"]
    full = (max(cfg.pretrain_fractions), max(cfg.finetune_fractions))
    n_eval = [int(r["n_eval"]) for r in rows if r.get("n_eval")]
    out: dict[str, Any] = {"axes": {}, "n_eval": int(np.median(n_eval)) if n_eval else 0}
    if not n_eval:
        return out

    def p(v: str, cell: tuple[float, float]) -> float:
        vals = [r[key] for r in _cell(rows, v, *cell)]
        return float(np.clip(np.mean(vals), 0.0, 1.0)) if vals else 0.5

    for axis, g in verdict_nums.items():
        if g.get("n", 0) < 2 or not np.isfinite(g.get("se", float("nan"))):
            continue
        cell = {"pre-training": (min(cfg.pretrain_fractions), full[1]), "fine-tuning": (full[0], min(cfg.finetune_fractions)),
                "both": (min(cfg.pretrain_fractions), min(cfg.finetune_fractions))}[axis]
        unit = eval_variance_unit((p("none", full), p("none", cell)), ([p(v, full) for v in grounding], [p(v, cell) for v in grounding]))
        out["axes"][axis] = seeds_needed(g["se"] * math.sqrt(g["n"]), out["n_eval"], unit)
    if out["axes"]:
        recs = [a["recommended"] for a in out["axes"].values()]
        scale = max(r["scale"] for r in recs)
        seeds = max(next(b["seeds"] for b in a["by_eval"] if b["scale"] == scale) for a in out["axes"].values())
        out["need"] = {"seeds": seeds, "scale": scale, "n_eval": scale * out["n_eval"]}
    return out
