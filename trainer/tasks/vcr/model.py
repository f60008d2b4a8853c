"""The VCR model: the pre-trained encoder on each (context, choice) pair, VCRHead's one score per pair, softmax over a question's four."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.tasks.finetune import load_pretrained
from trainer.tasks.pooled import PooledModel
from trainer.tasks.vcr.head import VCRHead
from trainer.tasks.vcr.loss import vcr_loss


def build_vcr_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab_size: int, dropout: float = 0.1) -> PooledModel:
    """The pre-training model for these regions (weights from ``ckpt``, or random), its encoder kept, a new pair scorer."""
    encoder = load_pretrained(cfg, ckpt, feat_dim, num_classes, vocab_size).encoder
    return PooledModel(encoder, VCRHead(encoder.text_dim, encoder.visual_dim, dropout=dropout))


def choice_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over each question's four choices."""
    return vcr_loss(model(batch), batch["target"])
