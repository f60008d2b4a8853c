"""The VQA loss: binary cross-entropy of every vocabulary answer against its soft target.

``reduction="scaled"`` (default) is the mean BCE times the number of answers, i.e. summed over the
vocabulary and averaged over the batch: bottom-up-attention-vqa's ``instance_bce_with_logits`` and
ViLBERT's ``BCEWithLogitsLoss(reduction="mean") * target.size(1)``, the scale the reference
fine-tuning learning rates (ViLBERT 4e-5, batch 256) were tuned with. ``"mean"`` is plain BCE over
all entries (3,129x smaller on the real vocabulary). Computed in float32 whatever the autocast dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("scaled", "mean")


def vqa_bce_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "scaled") -> torch.Tensor:
    """``logits``, ``targets`` ``[B, A]`` (targets in 0..1) → scalar loss."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be [B, num_answers]")
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="mean")
    return loss * logits.shape[1] if reduction == "scaled" else loss
