"""NLVR2 pair head (ViLBERT / LXMERT / UNITER "pair" setup): the sentence is encoded with each image;
the two pooled outputs are concatenated and classified True/False.

As vilbert-multi-task: per encoding, ``BertTextPooler``/``BertImagePooler`` (dense + ReLU on [CLS]
and [IMG]) and their product (``fusion_method="mul"``); the two fused vectors of one example are
concatenated (``view(-1, 2·bi)``) into ``SimpleClassifier(2·bi, 2·bi, 2)``: ``Linear → GELU →
LayerNorm(eps 1e-12) → Linear``. Logit 1 is "True". ``pool=False`` takes already pooled inputs.
"""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 2


class NLVR2Head(nn.Module):
    def __init__(self, t_dim: int, v_dim: int, fused_dim: int | None = None, dropout: float = 0.1, pool: bool = True):
        super().__init__()
        fused = fused_dim or max(t_dim, v_dim)
        if not pool and not (t_dim == v_dim == fused):
            raise ValueError(f"pool=False needs pooled inputs of one size, got t_dim={t_dim}, v_dim={v_dim}, fused_dim={fused}")
        self.t_pool = nn.Sequential(nn.Linear(t_dim, fused), nn.ReLU()) if pool else nn.Identity()
        self.v_pool = nn.Sequential(nn.Linear(v_dim, fused), nn.ReLU()) if pool else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Sequential(
            nn.Linear(2 * fused, 2 * fused), nn.GELU(), nn.LayerNorm(2 * fused, eps=1e-12), nn.Linear(2 * fused, NUM_CLASSES)
        )

    def forward(self, cls: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``cls [2B, Ht]``, ``img [2B, Hv]``, rows ``2b`` (img0) and ``2b+1`` (img1) of example ``b`` → logits ``[B, 2]``."""
        if cls.shape[0] % 2:
            raise ValueError(f"{cls.shape[0]} encodings: NLVR2 needs two (img0, img1) per example")
        fused = self.dropout(self.t_pool(cls) * self.v_pool(img))
        return self.classifier(fused.reshape(-1, 2 * fused.shape[-1]))
