"""Dual-stream encoder (ViLBERT-like): a text BERT and a visual transformer joined by co-attention.

text:   BERT embeddings → all BERT layers ─────────┐
                                                     ├─ co_layers × CoAttentionBlock → text, [IMG], regions
visual: [IMG] + regions embeddings → v_layers blocks ┘

ViLBERT interleaves co-attention with the upper text layers; running the whole text BERT first
keeps a pretrained checkpoint's layers intact and contiguous (a simplification we chose).

``links`` (VL-BERT's linked-region words) are single-stream only: the text and visual streams have
different widths here and no pre-trained map between them, so a dual-stream encoder refuses them and
VCR keeps the object's tag word alone (:mod:`trainer.tasks.vcr.text`).
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.embeddings import VisualEmbeddings
from trainer.models.layers import CoAttentionBlock, TransformerBlock
from trainer.models.single_stream import EncoderOutput


class DualStreamEncoder(nn.Module):
    def __init__(
        self, bert: nn.Module, feat_dim: int, v_hidden: int = 128, v_layers: int = 1, co_layers: int = 1,
        heads: int = 4, location: str = "spe", dropout: float = 0.1,
    ):
        super().__init__()
        self.bert = bert
        t_hidden = bert.config.hidden_size
        self.text_dim, self.visual_dim = t_hidden, v_hidden
        self.visual = VisualEmbeddings(feat_dim, v_hidden, location, dropout)
        self.v_blocks = nn.ModuleList(TransformerBlock(v_hidden, heads, 4 * v_hidden, dropout) for _ in range(v_layers))
        self.co_blocks = nn.ModuleList(
            CoAttentionBlock(t_hidden, v_hidden, heads, bert.config.intermediate_size, 4 * v_hidden, dropout)
            for _ in range(co_layers)
        )

    def forward(self, input_ids, text_mask, feat, boxes, region_mask, links: torch.Tensor | None = None) -> EncoderOutput:
        if links is not None:
            raise ValueError("linked-region word embeddings (links) need the single-stream encoder; the dual-stream one takes tag words only")
        t = self.bert.embeddings(input_ids=input_ids)  # [B, T, Ht]
        t = self.bert.encoder(t, attention_mask=text_mask[:, None, None, :]).last_hidden_state
        v = self.visual(feat, boxes, region_mask)  # [B, 1+R, Hv]
        v_mask = torch.cat([region_mask.new_ones(region_mask.shape[0], 1), region_mask], dim=1)
        for block in self.v_blocks:
            v = block(v, v_mask)
        for block in self.co_blocks:
            t, v = block(t, text_mask, v, v_mask)
        return EncoderOutput(text=t, image=v[:, 0], regions=v[:, 1:])
