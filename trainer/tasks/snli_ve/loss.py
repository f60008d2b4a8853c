"""SNLI-VE loss: three-way softmax cross-entropy, in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.tasks.snli_ve.reader import LABELS


def snli_ve_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits [B, 3]`` (LABELS order), ``labels [B]`` class indices → mean cross-entropy."""
    if logits.dim() != 2 or logits.shape[1] != len(LABELS) or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, {len(LABELS)}] and labels {tuple(labels.shape)} [B]")
    return F.cross_entropy(logits.float(), labels.long())
