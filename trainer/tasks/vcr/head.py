"""VCR's model pieces: the linked-region word embeddings and the per-pair scorer.

:func:`add_linked_regions` is VL-BERT's VCR input: a word that refers to an object gets that
object's (projected) region feature added to its word embedding. :class:`VCRHead` scores each
(context, choice) pair with ViLBERT's pooled-product classifier reduced to one logit
(:class:`trainer.tasks.vqa.head.VQAHead` with one output, as vilbert-multi-task's VCR head) and
returns the four logits of a question side by side, for a softmax over the choices.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.tasks.vcr.reader import NUM_CHOICES
from trainer.tasks.vqa.head import VQAHead


def add_linked_regions(word_emb: torch.Tensor, region_feats: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
    """``word_emb [B, T, H] + region_feats[b, links[b, t]]`` where ``links >= 0`` (``-1``: no link).
    ``region_feats [B, R, H]`` must already be in the word-embedding size (the engine projects them)."""
    if word_emb.shape[:2] != links.shape or region_feats.shape[0] != word_emb.shape[0] or region_feats.shape[-1] != word_emb.shape[-1]:
        raise ValueError(f"shapes do not agree: word_emb {tuple(word_emb.shape)}, region_feats {tuple(region_feats.shape)}, links {tuple(links.shape)}")
    if links.numel() and int(links.max()) >= region_feats.shape[1]:
        raise ValueError(f"a link points at region {int(links.max())} of {region_feats.shape[1]}")
    idx = links.clamp(min=0).unsqueeze(-1).expand(-1, -1, region_feats.shape[-1])
    linked = torch.gather(region_feats, 1, idx) * (links >= 0).unsqueeze(-1).to(region_feats.dtype)
    return word_emb + linked.to(word_emb.dtype)


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
