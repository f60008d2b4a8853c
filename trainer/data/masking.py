"""Masked language modelling and masked region inputs (BERT's 15% with 80/10/10; region zeroing)."""
from __future__ import annotations

import numpy as np

IGNORE = -100  # label of tokens that carry no MLM loss (torch's cross-entropy default)


def mask_tokens(
    ids: np.ndarray, rng: np.random.Generator, prob: float, mask_id: int, vocab_size: int, special_ids: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: pick ``prob`` of the non-special tokens; of those 80% → [MASK], 10% → random, 10% kept.

    Returns ``(masked_ids, labels)`` with labels = original id at picked positions, else ``IGNORE``.
    At least one token is picked when any is eligible, so every caption teaches something.
    """
    ids = ids.copy()
    labels = np.full_like(ids, IGNORE)
    eligible = np.flatnonzero(~np.isin(ids, list(special_ids)))
    if eligible.size == 0 or prob <= 0:
        return ids, labels
    picked = eligible[rng.random(eligible.size) < prob]
    if picked.size == 0:
        picked = eligible[[rng.integers(eligible.size)]]
    labels[picked] = ids[picked]
    u = rng.random(picked.size)
    ids[picked[u < 0.8]] = mask_id
    rand = picked[(u >= 0.8) & (u < 0.9)]
    ids[rand] = rng.integers(0, vocab_size, rand.size)
    return ids, labels


def mask_regions(num_regions: int, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Bool [N]: regions whose features are zeroed and whose detector class distribution is the target."""
    masked = rng.random(num_regions) < prob
    if prob > 0 and num_regions > 0 and not masked.any():
        masked[rng.integers(num_regions)] = True
    return masked
