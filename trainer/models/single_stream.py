"""Single-stream encoder (VL-BERT-like): text and visual tokens in one BERT.

Sequence: ``[CLS] w1 .. wn [SEP]`` (BERT word + position + segment embeddings) followed by
``[IMG] r1 .. rR`` (projected region features + box location + visual type embedding); one
bidirectional encoder attends over all of it.

``links`` (optional ``[B, T]`` long, ``-1`` none): VL-BERT's linked-region words (VCR's object
references). Token ``t`` linked to region ``r`` gets region ``r``'s *input* embedding (projected
feature + location + type, normalised: what enters the encoder for ``r``, not its contextual state)
added to its word embedding before the encoder (:func:`~trainer.models.embeddings.add_linked_regions`).
Without ``links`` the outputs are those of the plain encoder, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.models.embeddings import VisualEmbeddings, add_linked_regions


@dataclass
class EncoderOutput:
    text: torch.Tensor  # [B, T, Ht] contextual text tokens ([CLS] at 0)
    image: torch.Tensor  # [B, Hv]    the [IMG] token
    regions: torch.Tensor  # [B, R, Hv] contextual region tokens


class SingleStreamEncoder(nn.Module):
    def __init__(self, bert: nn.Module, feat_dim: int, location: str = "spe", dropout: float = 0.1):
        super().__init__()
        self.bert = bert  # transformers BertModel (sdpa attention), text embeddings + encoder
        hidden = bert.config.hidden_size
        self.text_dim = self.visual_dim = hidden
        self.visual = VisualEmbeddings(feat_dim, hidden, location, dropout)

    def forward(self, input_ids, text_mask, feat, boxes, region_mask, links: torch.Tensor | None = None) -> EncoderOutput:
        t = self.bert.embeddings(input_ids=input_ids)  # [B, T, H]
        v = self.visual(feat, boxes, region_mask)  # [B, 1+R, H]
        if links is not None:
            t = add_linked_regions(t, v[:, 1:], links.to(t.device))
        x = torch.cat([t, v], dim=1)  # [B, T+1+R, H]
        img_mask = region_mask.new_ones(region_mask.shape[0], 1)
        mask = torch.cat([text_mask, img_mask, region_mask], dim=1)  # [B, T+1+R]
        h = self.bert.encoder(x, attention_mask=mask[:, None, None, :]).last_hidden_state
        n = input_ids.shape[1]
        # A slice, not h[:, n]: torch.compile specialises an integer index to the text length it first
        # sees, which would recompile the model for every new padded length.
        return EncoderOutput(text=h[:, :n], image=h[:, n : n + 1].squeeze(1), regions=h[:, n + 1 :])
