"""Masked modelling terms shared by the μ-VLA objectives: tokens, region classes, region features."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE = -100  # as trainer.data.masking.IGNORE: a token with this label carries no loss


class Term(NamedTuple):
    """A loss as ``(sum over items, number of items)``; the training loop divides by the global count."""

    sum: torch.Tensor
    count: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """Mean over items; 0 (still in the graph) when there is none."""
        return self.sum / self.count.clamp(min=1)


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> Term:
    """Cross-entropy of ``logits`` [B, T, V] at positions whose ``labels`` [B, T] are not ``IGNORE``.

    Items: masked tokens. Serves MLM over captions, over tag sentences and over retrieved sentences.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)}")
    flat = labels.reshape(-1)
    s = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE, reduction="sum")
    return Term(s, (flat != IGNORE).sum().float())


def masked_region_classification_loss(region_logits: torch.Tensor, target_dist: torch.Tensor, region_masked: torch.Tensor) -> Term:
    """KL(detector distribution ‖ predicted) over masked regions (UNITER's MRC-kl; the project's L_img).

    ``region_logits`` [B, N, C], ``target_dist`` [B, N, C] (renormalised here; rows of zeros carry no
    loss), ``region_masked`` [B, N] bool. Items: masked regions.
    """
    if region_logits.shape != target_dist.shape or region_logits.shape[:2] != region_masked.shape:
        raise ValueError(f"shapes {tuple(region_logits.shape)}, {tuple(target_dist.shape)}, {tuple(region_masked.shape)} do not fit")
    m = region_masked.bool()
    target = target_dist[m].float()
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    s = F.kl_div(F.log_softmax(region_logits[m].float(), -1), target, reduction="sum")
    return Term(s, m.sum().float())


def masked_region_feature_regression_loss(pred: torch.Tensor, target: torch.Tensor, region_masked: torch.Tensor) -> Term:
    """Squared error between predicted and original features of masked regions (UNITER's MRFR).

    ``pred``/``target`` [B, N, D], ``region_masked`` [B, N] bool. Items: masked regions; each
    contributes its mean squared error over the D feature dimensions (so the scale does not grow with D).
    """
    if pred.shape != target.shape or pred.shape[:2] != region_masked.shape:
        raise ValueError(f"shapes {tuple(pred.shape)}, {tuple(target.shape)}, {tuple(region_masked.shape)} do not fit")
    m = region_masked.bool()
    per_region = (pred[m].float() - target[m].float().detach()).pow(2).mean(-1)
    return Term(per_region.sum(), m.sum().float())
