"""The VQA model: the pre-trained encoder plus ViLBERT's VQA head on its [CLS] and [IMG] outputs."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.tasks.finetune import load_pretrained
from trainer.tasks.pooled import PooledModel
from trainer.tasks.vqa.head import VQAHead
from trainer.tasks.vqa.loss import vqa_bce_loss


class VQAModel(PooledModel):
    """Encoder → ``VQAHead(pooled [CLS] ⊙ pooled [IMG])`` → one logit per vocabulary answer (new head weights)."""

    def __init__(self, encoder: nn.Module, num_answers: int, dropout: float = 0.1):
        super().__init__(encoder, VQAHead(encoder.text_dim, encoder.visual_dim, num_answers, dropout=dropout))


def build_vqa_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab_size: int, num_answers: int,
                    dropout: float = 0.1) -> VQAModel:
    """The pre-training model for these regions (weights from ``ckpt``, or random), its encoder kept, a new VQA head."""
    return VQAModel(load_pretrained(cfg, ckpt, feat_dim, num_classes, vocab_size).encoder, num_answers, dropout)


def vqa_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE of every vocabulary answer against its soft target (scaled by the vocabulary size, as ViLBERT)."""
    return vqa_bce_loss(model(batch), batch["target"])
