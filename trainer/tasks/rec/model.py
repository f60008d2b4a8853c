"""The REC model: the pre-trained encoder plus a score per region (a new linear head, or the pre-trained grounding head)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.models.heads import GroundingHead
from trainer.tasks.finetune import load_pretrained

HEADS = ("linear", "grounding")


class RECModel(nn.Module):
    """Pre-trained encoder + a score per region token.

    ``head="linear"``: ``score(r) = w · dropout(h_r) + b`` (ViLBERT's RefCOCO+ head; new weights).
    ``head="grounding"``: the pre-training grounding head ``f_align`` scores (expression, region) with
    the whole expression as the phrase, so what the grounding loss trained is kept, not dropped. Its
    weights come from the checkpoint whatever the variant (untrained, as initialised, when λ_gnd = 0).
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.1, grounding: GroundingHead | None = None):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.grounding = grounding
        self.score = nn.Linear(encoder.visual_dim, 1) if grounding is None else None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, R]``; padding regions get ``-inf`` so softmax and argmax ignore them."""
        enc = self.encoder(batch["input_ids"], batch["text_mask"], batch["feat"], batch["boxes"], batch["region_mask"])
        regions = self.dropout(enc.regions)  # [B, R, Hv]
        if self.grounding is None:
            logits = self.score(regions).squeeze(-1)
        else:
            # The phrase is the expression without [CLS] and [SEP]: tokens [1, n - 1).
            n = batch["text_mask"].sum(1)  # [B]
            logits = self.grounding.score_regions(enc.text, regions, torch.ones_like(n), (n - 1).clamp(min=2))
        return logits.float().masked_fill(~batch["region_mask"], float("-inf"))


def build_rec_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab: int, dropout: float,
                    head: str = "linear") -> RECModel:
    """Build the pre-training model class, load the checkpoint into it, keep its encoder (and grounding head)."""
    if head not in HEADS:
        raise ValueError(f"REC head {head!r} is not one of {HEADS}")
    model = load_pretrained(cfg, ckpt, feat_dim, num_classes, vocab)
    return RECModel(model.encoder, dropout, model.grounding if head == "grounding" else None)
