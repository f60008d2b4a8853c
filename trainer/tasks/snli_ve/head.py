"""SNLI-VE head: three-way classifier on the pooled output.

ViLBERT's visual-entailment head (vilbert-multi-task, task ``VisualEntailment``, 3 labels): the pooled
[CLS] ⊙ pooled [IMG] into ``SimpleClassifier(bi, 2·bi, 3)``, which is exactly
:class:`trainer.tasks.vqa.head.VQAHead` with three outputs; logits are in :data:`LABELS` order.
"""
from __future__ import annotations

from trainer.tasks.snli_ve.reader import LABELS
from trainer.tasks.vqa.head import VQAHead


class SNLIVEHead(VQAHead):
    def __init__(self, t_dim: int, v_dim: int, fused_dim: int | None = None, dropout: float = 0.1, pool: bool = True):
        super().__init__(t_dim, v_dim, len(LABELS), fused_dim, dropout, pool)
