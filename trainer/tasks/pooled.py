"""The model every classification task builds on the pre-trained encoder: its pooled [CLS] and [IMG]
outputs into a task head (VQA's answers, SNLI-VE's three classes, NLVR2's pair head)."""
from __future__ import annotations

import torch
from torch import nn


class PooledModel(nn.Module):
    """Encoder → ``head(enc.text[:, 0], enc.image)`` → logits (float32). The batch is
    :func:`trainer.tasks.regions.collate_inputs`' output (its ``links`` go to the encoder when present); a pair head (NLVR2) gets two encodings per example."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        links = {"links": batch["links"]} if "links" in batch else {}  # VCR's linked-region words (single-stream)
        enc = self.encoder(batch["input_ids"], batch["text_mask"], batch["feat"], batch["boxes"], batch["region_mask"], **links)
        return self.head(enc.text[:, 0], enc.image).float()
