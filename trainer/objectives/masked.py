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


def _masked_rows(x: torch.Tensor, region_masked: torch.Tensor | None) -> torch.Tensor:
    """The masked regions' rows [M, ...] of ``x`` [B, N, ...]; ``None``: every row (the caller gathered
    them already), which needs no boolean selection, so no read of the mask back to the host."""
    return x.reshape(-1, *x.shape[2:]) if region_masked is None else x[region_masked.bool()]


def _count(region_masked: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    if region_masked is None:
        return torch.full((), rows.shape[0], dtype=torch.float32, device=rows.device)
    return region_masked.bool().sum().float()


def masked_region_classification_loss(region_logits: torch.Tensor, target_dist: torch.Tensor, region_masked: torch.Tensor | None) -> Term:
    """KL(detector distribution ‖ predicted) over masked regions (UNITER's MRC-kl; the project's L_img).

    ``region_logits`` [B, N, C], ``target_dist`` [B, N, C] (renormalised here; rows of zeros carry no
    loss), ``region_masked`` [B, N] bool, or ``None`` when every row is a masked region. Items: masked regions.
    """
    if region_logits.shape != target_dist.shape or (region_masked is not None and region_logits.shape[:2] != region_masked.shape):
        raise ValueError(f"shapes {tuple(region_logits.shape)}, {tuple(target_dist.shape)}, "
                         f"{None if region_masked is None else tuple(region_masked.shape)} do not fit")
    target = _masked_rows(target_dist, region_masked).float()
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    logits = _masked_rows(region_logits, region_masked)
    s = F.kl_div(F.log_softmax(logits.float(), -1), target, reduction="sum")
    return Term(s, _count(region_masked, logits))


def masked_region_feature_regression_loss(pred: torch.Tensor, target: torch.Tensor, region_masked: torch.Tensor | None) -> Term:
    """Squared error between predicted and original features of masked regions (UNITER's MRFR).

    ``pred``/``target`` [B, N, D], ``region_masked`` [B, N] bool or ``None`` (every row). Items: masked
    regions; each contributes its mean squared error over the D feature dimensions (so the scale does
    not grow with D).
    """
    if pred.shape != target.shape or (region_masked is not None and pred.shape[:2] != region_masked.shape):
        raise ValueError(f"shapes {tuple(pred.shape)}, {tuple(target.shape)}, "
                         f"{None if region_masked is None else tuple(region_masked.shape)} do not fit")
    rows = _masked_rows(pred, region_masked)
    per_region = (rows.float() - _masked_rows(target, region_masked).float().detach()).pow(2).mean(-1)
    return Term(per_region.sum(), _count(region_masked, rows))
