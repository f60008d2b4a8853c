"""The SNLI-VE model: the pre-trained encoder plus ViLBERT's visual-entailment head on pooled [CLS] ⊙ [IMG]."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.tasks.finetune import load_pretrained
from trainer.tasks.pooled import PooledModel
from trainer.tasks.snli_ve.head import SNLIVEHead
from trainer.tasks.snli_ve.loss import snli_ve_loss


def build_snli_ve_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab_size: int, dropout: float = 0.1) -> PooledModel:
    """The pre-training model for these regions (weights from ``ckpt``, or random), its encoder kept, a new three-way head."""
    encoder = load_pretrained(cfg, ckpt, feat_dim, num_classes, vocab_size).encoder
    return PooledModel(encoder, SNLIVEHead(encoder.text_dim, encoder.visual_dim, dropout=dropout))


def ve_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Three-way cross-entropy against the gold class."""
    return snli_ve_loss(model(batch), batch["target"])
