"""Visual token embeddings: projected region features + box location + a visual type embedding.

Location is either ViLBERT's 5-d linear feature ``[x1, y1, x2, y2, area]`` (relative to the image)
or the Spatial Positional Encoding: VL-BERT's fixed sine-cosine of the box centre, width and height
(×100, wavelengths ``1000 ** (2i / dim)``), then a linear map to the hidden size.
"""
from __future__ import annotations

import torch
from torch import nn

FULL_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0)


def box_5d(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] relative xyxy → [..., 5] ``[x1, y1, x2, y2, area]``."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return torch.cat([boxes, area.unsqueeze(-1)], dim=-1)


def box_sine_cosine(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., 4] relative xyxy → [..., 4*dim] fixed sine-cosine of (cx, cy, w, h) × 100."""
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    coords = torch.stack([cx, cy, w, h], dim=-1) * 100.0  # [..., 4]
    i = torch.arange(dim // 2, device=boxes.device, dtype=torch.float32)
    wavelengths = 1000.0 ** (2 * i / dim)  # [dim/2]
    angles = coords.float().unsqueeze(-1) / wavelengths  # [..., 4, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., 4*dim]


def add_linked_regions(word_emb: torch.Tensor, region_feats: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
    """``word_emb [B, T, H] + region_feats[b, links[b, t]]`` where ``links >= 0`` (``-1``: no link).
    ``region_feats [B, R, H]`` must already be in the word-embedding size (the single-stream encoder passes its
    regions' input embeddings). VL-BERT's VCR input; links index ``region_feats``' R axis."""
    if word_emb.shape[:2] != links.shape or region_feats.shape[0] != word_emb.shape[0] or region_feats.shape[-1] != word_emb.shape[-1]:
        raise ValueError(f"shapes do not agree: word_emb {tuple(word_emb.shape)}, region_feats {tuple(region_feats.shape)}, links {tuple(links.shape)}")
    if links.numel() and int(links.max()) >= region_feats.shape[1]:
        raise ValueError(f"a link points at region {int(links.max())} of {region_feats.shape[1]}")
    idx = links.clamp(min=0).unsqueeze(-1).expand(-1, -1, region_feats.shape[-1])
    linked = torch.gather(region_feats, 1, idx) * (links >= 0).unsqueeze(-1).to(region_feats.dtype)
    return word_emb + linked.to(word_emb.dtype)


class LocationEmbedding(nn.Module):
    def __init__(self, hidden: int, kind: str = "spe", spe_dim: int = 32):
        super().__init__()
        self.kind, self.spe_dim = kind, spe_dim
        self.proj = nn.Linear(4 * spe_dim if kind == "spe" else 5, hidden)

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:  # [B, R, 4] → [B, R, H]
        loc = box_sine_cosine(boxes, self.spe_dim) if self.kind == "spe" else box_5d(boxes)
        return self.proj(loc)


class VisualEmbeddings(nn.Module):
    """Region tokens, preceded by an [IMG] token (mean region feature, whole-image box) as in ViLBERT."""

    def __init__(self, feat_dim: int, hidden: int, location: str = "spe", dropout: float = 0.1):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, hidden)
        self.location = LocationEmbedding(hidden, location)
        self.type_embedding = nn.Parameter(torch.zeros(hidden))  # marks visual tokens in a shared stream
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, feat: torch.Tensor, boxes: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
        # feat [B, R, D] (float16 from the loader), boxes [B, R, 4], region_mask [B, R] → [B, 1+R, H]
        feat = feat.to(self.feat_proj.weight.dtype)
        m = region_mask.unsqueeze(-1).to(feat.dtype)
        img_feat = (feat * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)  # [B, 1, D]
        img_box = boxes.new_tensor(FULL_IMAGE_BOX).expand(feat.shape[0], 1, 4)
        f = torch.cat([img_feat, feat], dim=1)
        b = torch.cat([img_box, boxes], dim=1)
        x = self.feat_proj(f) + self.location(b) + self.type_embedding
        return self.dropout(self.norm(x))
