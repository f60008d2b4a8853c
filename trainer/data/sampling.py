"""Hierarchical region-phrase pair sampling for the grounding loss.

Level 1 picks phrases: every phrase with at least one positive region, plus a share of the phrases
that matched nothing (so the model also sees "this phrase is nowhere"). Level 2 picks, per phrase,
up to P positive and up to N negative regions, with the negatives of the whole example capped at
``neg_per_pos`` × (number of positives) — the global positive:negative ratio. Negatives can be
taken hardest-first: highest IoU still below the threshold, or highest teacher score among non-matches.

All randomness comes from the generator the caller passes, so a sample is a pure function of its seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplerConfig:
    unmatched_phrase_share: float = 0.2
    max_pos_per_phrase: int = 4
    max_neg_per_phrase: int = 8
    neg_per_pos: float = 3.0
    hard_negatives: str = "none"  # "none" | "iou" | "score"
    hard_negative_share: float = 0.5
    iou_threshold: float | None = None  # None: trust the shard's binary `align`
    soft_targets: bool = False


@dataclass
class Pairs:
    """Sampled pairs of one example: row ``i`` is (phrase, region, target)."""

    phrase: np.ndarray  # int64 [K] index into the example's phrases
    region: np.ndarray  # int64 [K] index into the example's regions
    target: np.ndarray  # float32 [K] 1/0, or the teacher confidence of positives with soft targets

    def __len__(self) -> int:
        return int(self.phrase.size)


def positives(align: np.ndarray, iou: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary ``M`` [P, N]: the shard's ``align``, or ``iou >= threshold`` chosen at training time."""
    if threshold is None:
        return align.astype(bool)
    return iou.astype(np.float32) >= np.float32(threshold)


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    """Unbiased integer rounding, so a 20% share of 1 unmatched phrase is kept 20% of the time."""
    base = int(np.floor(x))
    return base + int(rng.random() < x - base)


def _spread(budget: int, caps: np.ndarray) -> np.ndarray:
    """Give out ``budget`` slots round-robin over phrases, none beyond its cap."""
    quota = np.zeros_like(caps)
    while budget > 0:
        open_ = np.flatnonzero(quota < caps)
        if open_.size == 0:
            break
        take = open_[:budget]
        quota[take] += 1
        budget -= take.size
    return quota


def sample_pairs(
    align: np.ndarray, iou: np.ndarray, score: np.ndarray, cfg: SamplerConfig, rng: np.random.Generator
) -> Pairs:
    """Sample (phrase, region, target) pairs of one caption's phrases [P, N] against its regions."""
    m = positives(align, iou, cfg.iou_threshold)
    num_phrases = m.shape[0]
    matched = np.flatnonzero(m.any(axis=1))
    unmatched = np.flatnonzero(~m.any(axis=1))
    k = min(unmatched.size, _stochastic_round(cfg.unmatched_phrase_share * unmatched.size, rng))
    chosen = np.concatenate([matched, rng.choice(unmatched, k, replace=False)]) if num_phrases else matched
    chosen = rng.permutation(chosen.astype(np.int64))

    pos = {p: rng.permutation(np.flatnonzero(m[p]))[: cfg.max_pos_per_phrase] for p in chosen}
    num_pos = sum(v.size for v in pos.values())
    neg_pool = {p: np.flatnonzero(~m[p]) for p in chosen}
    caps = np.array([min(cfg.max_neg_per_phrase, neg_pool[p].size) for p in chosen], dtype=np.int64)
    # The ratio is over the example's positives; a caption whose chosen phrases all lack a positive
    # still gets the negatives of one, so unmatched phrases are seen at all.
    budget = int(round(cfg.neg_per_pos * max(num_pos, 1)))
    quota = _spread(budget, caps)

    hardness = {"iou": iou, "score": score}.get(cfg.hard_negatives)
    rows_p, rows_r, rows_t = [], [], []
    for p, q in zip(chosen, quota):
        negs = neg_pool[p]
        if hardness is not None and q > 0:
            n_hard = int(round(cfg.hard_negative_share * q))
            # Hardest first; ties keep region order (a stable sort), so the choice is reproducible.
            order = np.argsort(-hardness[p, negs].astype(np.float32), kind="stable")
            hard, rest = negs[order[:n_hard]], negs[order[n_hard:]]
            picked_neg = np.concatenate([hard, rng.choice(rest, q - n_hard, replace=False)])
        else:
            picked_neg = rng.choice(negs, q, replace=False)
        ps = pos[p]
        tgt = score[p, ps].astype(np.float32).clip(0, 1) if cfg.soft_targets else np.ones(ps.size, np.float32)
        rows_p += [np.full(ps.size + picked_neg.size, p, np.int64)]
        rows_r += [ps.astype(np.int64), picked_neg.astype(np.int64)]
        rows_t += [tgt, np.zeros(picked_neg.size, np.float32)]
    if not rows_p:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return Pairs(np.concatenate(rows_p), np.concatenate(rows_r), np.concatenate(rows_t))
