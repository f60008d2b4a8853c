"""μ-VLA image–sentence alignment on retrieved pairs: ITM (+ MLM, :func:`masked_token_loss`).

A retrieved pair is only probably right. After the first epoch the model's own ITM score on a
positive pair (detached) weights that pair's ITM loss, so pairs the model finds implausible count
less; negatives (a sentence from another image) keep weight 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.objectives.masked import Term


def itm_self_weights(itm_logit: torch.Tensor, itm_label: torch.Tensor, epoch: int, warmup_epochs: int = 1) -> torch.Tensor:
    """Per-example ITM weights [B]: 1 during the first ``warmup_epochs`` epochs (0-based ``epoch``);
    afterwards ``sigmoid(itm_logit)`` (no gradient) for positives (label 1), 1 for negatives."""
    if epoch < 0 or warmup_epochs < 0:
        raise ValueError(f"epoch ({epoch}) and warmup_epochs ({warmup_epochs}) must be >= 0")
    ones = torch.ones_like(itm_logit, dtype=torch.float32)
    if epoch < warmup_epochs:
        return ones
    return torch.where(itm_label > 0.5, torch.sigmoid(itm_logit.detach().float()), ones)


def itm_loss(itm_logit: torch.Tensor, itm_label: torch.Tensor, weights: torch.Tensor | None = None) -> Term:
    """Weighted binary cross-entropy of the ITM logit [B] against 0/1 labels [B].

    Items: the sum of the weights (so the mean is a weighted mean; unweighted it is the example count).
    """
    if itm_logit.shape != itm_label.shape:
        raise ValueError(f"itm_logit {tuple(itm_logit.shape)} does not fit itm_label {tuple(itm_label.shape)}")
    w = torch.ones_like(itm_logit, dtype=torch.float32) if weights is None else weights.float()
    per = F.binary_cross_entropy_with_logits(itm_logit.float(), itm_label.float(), reduction="none")
    return Term((w * per).sum(), w.sum())
