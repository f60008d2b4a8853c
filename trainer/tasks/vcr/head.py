"""VCR's model pieces: the linked-region word embeddings and the per-pair scorer.

:func:`add_linked_regions` (in :mod:`trainer.models.embeddings`, which the encoder uses) is VL-BERT's VCR input: a word that refers to an object gets that
object's (projected) region feature added to its word embedding. :class:`VCRHead` scores each
(context, choice) pair with ViLBERT's pooled-product classifier reduced to one logit
(:class:`trainer.tasks.vqa.head.VQAHead` with one output, as vilbert-multi-task's VCR head) and
returns the four logits of a question side by side, for a softmax over the choices.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.embeddings import add_linked_regions  # noqa: F401  (re-exported: trainer.tasks.vcr.add_linked_regions)
from trainer.tasks.vcr.reader import NUM_CHOICES
from trainer.tasks.vqa.head import VQAHead


class VCRHead(nn.Module):
    def __init__(self, t_dim: int, v_dim: int, fused_dim: int | None = None, dropout: float = 0.1, pool: bool = True, num_choices: int = NUM_CHOICES):
        super().__init__()
        self.num_choices = num_choices
        self.scorer = VQAHead(t_dim, v_dim, 1, fused_dim, dropout, pool)

    def forward(self, cls: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``cls [B·C, Ht]``, ``img [B·C, Hv]`` (pairs of one question consecutive) → logits ``[B, C]``."""
        if cls.shape[0] % self.num_choices:
            raise ValueError(f"{cls.shape[0]} pairs is not a multiple of {self.num_choices} choices")
        return self.scorer(cls, img).view(-1, self.num_choices)
