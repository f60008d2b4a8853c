"""Hierarchical sampler: caps, global ratio, unmatched share, hard negatives, threshold and soft targets."""
from __future__ import annotations

import numpy as np

from trainer.data.sampling import SamplerConfig, positives, sample_pairs


def toy(rng, phrases=6, regions=30, matched_rows=4):
    align = np.zeros((phrases, regions), np.uint8)
    for p in range(matched_rows):
        align[p, rng.choice(regions, rng.integers(1, 8), replace=False)] = 1
    iou = np.where(align, rng.uniform(0.5, 1, align.shape), rng.uniform(0, 0.5, align.shape)).astype(np.float16)
    score = rng.uniform(0, 1, align.shape).astype(np.float16)
    return align, iou, score


def test_caps_and_global_ratio_hold():
    rng = np.random.default_rng(0)
    cfg = SamplerConfig(max_pos_per_phrase=3, max_neg_per_phrase=10, neg_per_pos=2.0, unmatched_phrase_share=0.0)
    for _ in range(200):
        align, iou, score = toy(rng)
        pairs = sample_pairs(align, iou, score, cfg, rng)
        m = align.astype(bool)
        is_pos = m[pairs.phrase, pairs.region]
        assert np.array_equal(pairs.target, is_pos.astype(np.float32))
        n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
        assert n_neg == round(2.0 * n_pos)  # plenty of negatives: the ratio is exact
        for p in np.unique(pairs.phrase):
            sel = pairs.phrase == p
            assert is_pos[sel].sum() == min(3, m[p].sum())
            assert (~is_pos[sel]).sum() <= 10
        # no duplicate pairs
        assert len(set(zip(pairs.phrase.tolist(), pairs.region.tolist()))) == len(pairs)
        # level 1: every matched phrase, and (share 0) no unmatched one
        assert set(pairs.phrase.tolist()) == set(np.flatnonzero(m.any(1)).tolist())


def test_per_phrase_negative_cap_limits_the_ratio():
    rng = np.random.default_rng(1)
    cfg = SamplerConfig(max_pos_per_phrase=8, max_neg_per_phrase=2, neg_per_pos=5.0, unmatched_phrase_share=0.0)
    align, iou, score = toy(rng)
    pairs = sample_pairs(align, iou, score, cfg, rng)
    is_pos = align.astype(bool)[pairs.phrase, pairs.region]
    assert (~is_pos).sum() == 2 * len(np.unique(pairs.phrase))


def test_unmatched_phrase_share_is_respected_on_average():
    rng = np.random.default_rng(2)
    cfg = SamplerConfig(unmatched_phrase_share=0.3)
    kept, total = 0, 0
    for _ in range(2000):
        align, iou, score = toy(rng, phrases=5, matched_rows=2)
        pairs = sample_pairs(align, iou, score, cfg, rng)
        kept += len(set(pairs.phrase.tolist()) - {0, 1})
        total += 3
    assert abs(kept / total - 0.3) < 0.02


def test_hard_negatives_take_the_highest_iou_below_threshold():
    rng = np.random.default_rng(3)
    align, iou, score = toy(rng, phrases=1, regions=40, matched_rows=1)
    cfg = SamplerConfig(max_neg_per_phrase=4, neg_per_pos=100.0, hard_negatives="iou", hard_negative_share=1.0)
    pairs = sample_pairs(align, iou, score, cfg, rng)
    negs = pairs.region[pairs.target == 0]
    cand = np.flatnonzero(align[0] == 0)
    hardest = cand[np.argsort(-iou[0, cand].astype(np.float32), kind="stable")[:4]]
    assert sorted(negs.tolist()) == sorted(hardest.tolist())
    cfg = SamplerConfig(max_neg_per_phrase=4, neg_per_pos=100.0, hard_negatives="score", hard_negative_share=0.5)
    negs = sample_pairs(align, iou, score, cfg, rng).region
    top2 = cand[np.argsort(-score[0, cand].astype(np.float32), kind="stable")[:2]]
    assert set(top2.tolist()) <= set(negs.tolist())


def test_threshold_chosen_at_training_time_and_soft_targets():
    align = np.array([[1, 0, 0]], np.uint8)
    iou = np.array([[0.6, 0.35, 0.1]], np.float16)
    score = np.array([[0.9, 0.8, 0.2]], np.float16)
    assert positives(align, iou, None).tolist() == [[True, False, False]]
    assert positives(align, iou, 0.3).tolist() == [[True, True, False]]
    cfg = SamplerConfig(iou_threshold=0.3, soft_targets=True, neg_per_pos=1.0)
    pairs = sample_pairs(align, iou, score, cfg, np.random.default_rng(0))
    got = dict(zip(pairs.region.tolist(), pairs.target.tolist()))
    assert got[0] == np.float32(np.float16(0.9)) and got[1] == np.float32(np.float16(0.8))
    assert got.get(2, 0.0) == 0.0


def test_same_seed_same_pairs():
    align, iou, score = toy(np.random.default_rng(4))
    a = sample_pairs(align, iou, score, SamplerConfig(), np.random.default_rng(7))
    b = sample_pairs(align, iou, score, SamplerConfig(), np.random.default_rng(7))
    assert np.array_equal(a.region, b.region) and np.array_equal(a.phrase, b.phrase)
