"""VCR loss: softmax cross-entropy over a question's four choices (r2c, ViLBERT, VL-BERT), in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def vcr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits [B, C]``, ``labels [B]`` (choice index) → mean cross-entropy."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, C] and labels {tuple(labels.shape)} [B]")
    return F.cross_entropy(logits.float(), labels.long())
