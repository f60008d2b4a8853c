"""ViLBERT's VQA head: pooled [CLS] ⊙ pooled [IMG] → 2-layer MLP → one logit per vocabulary answer.

As facebookresearch/vilbert-multi-task ``vilbert/vilbert.py``: ``BertTextPooler`` / ``BertImagePooler``
(dense to the fused size ``bi_hidden``, then ReLU, on the first text and first visual token),
element-wise product (``fusion_method="mul"``), dropout, then ``SimpleClassifier``:
``Linear(bi, 2·bi) → GELU → LayerNorm(eps 1e-12) → Linear(2·bi, num_answers)``.

The head takes the encoder's [CLS] and [IMG] hidden states: ``cls [B, Ht]`` and ``img [B, Hv]``
(``enc.text[:, 0]`` and ``enc.image`` of the trainer's encoders) and returns logits ``[B, A]``.
With ``pool=False`` the inputs are taken as already pooled (both ``[B, fused_dim]``), for an
engine that shares the pre-training ITM head's poolers.
"""
from __future__ import annotations

import torch
from torch import nn


class VQAHead(nn.Module):
    def __init__(self, t_dim: int, v_dim: int, num_answers: int, fused_dim: int | None = None, dropout: float = 0.1, pool: bool = True):
        super().__init__()
        fused = fused_dim or max(t_dim, v_dim)
        if not pool and not (t_dim == v_dim == fused):
            raise ValueError(f"pool=False needs pooled inputs of one size, got t_dim={t_dim}, v_dim={v_dim}, fused_dim={fused}")
        if num_answers < 1:
            raise ValueError(f"num_answers must be >= 1, got {num_answers}")
        self.pool = pool
        self.t_pool = nn.Sequential(nn.Linear(t_dim, fused), nn.ReLU()) if pool else nn.Identity()
        self.v_pool = nn.Sequential(nn.Linear(v_dim, fused), nn.ReLU()) if pool else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Sequential(
            nn.Linear(fused, 2 * fused), nn.GELU(), nn.LayerNorm(2 * fused, eps=1e-12), nn.Linear(2 * fused, num_answers)
        )

    def forward(self, cls: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``cls [B, Ht]``, ``img [B, Hv]`` → logits ``[B, num_answers]``."""
        return self.classifier(self.dropout(self.t_pool(cls) * self.v_pool(img)))
