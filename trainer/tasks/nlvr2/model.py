"""The NLVR2 model: the pre-trained encoder run on (sentence, img0) and (sentence, img1), the pair head on both pooled outputs."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.tasks.finetune import load_pretrained
from trainer.tasks.nlvr2.head import NLVR2Head
from trainer.tasks.nlvr2.loss import nlvr2_loss
from trainer.tasks.pooled import PooledModel


def build_nlvr2_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab_size: int, dropout: float = 0.1) -> PooledModel:
    """The pre-training model for these regions (weights from ``ckpt``, or random), its encoder kept, a new pair head."""
    encoder = load_pretrained(cfg, ckpt, feat_dim, num_classes, vocab_size).encoder
    return PooledModel(encoder, NLVR2Head(encoder.text_dim, encoder.visual_dim, dropout=dropout))


def pair_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two-way cross-entropy against the label (1 = True)."""
    return nlvr2_loss(model(batch), batch["target"])
