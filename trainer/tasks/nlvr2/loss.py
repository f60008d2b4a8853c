"""NLVR2 loss: two-way softmax cross-entropy (ViLBERT's NLVR2 ``CrossEntropyLoss``), in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nlvr2_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits [B, 2]``, ``labels [B]`` (1 = True) → mean cross-entropy."""
    if logits.dim() != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, 2] and labels {tuple(labels.shape)} [B]")
    return F.cross_entropy(logits.float(), labels.long())
