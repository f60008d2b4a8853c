"""Pre-training heads: MLM (tied), masked region classification, ITM, and region-phrase grounding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Transform(nn.Sequential):
    """BERT's prediction-head transform: dense → GELU → LayerNorm."""

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=1e-12))


class MLMHead(nn.Module):
    """Masked-token logits through the (tied) word-embedding matrix."""

    def __init__(self, word_embeddings: nn.Embedding):
        super().__init__()
        vocab, dim = word_embeddings.weight.shape
        self.transform = Transform(dim)
        self.word_embeddings = word_embeddings  # shared, not copied: tied weights
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [M, H] → [M, V]
        return F.linear(self.transform(h), self.word_embeddings.weight, self.bias)


class RegionClassHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(Transform(dim), nn.Linear(dim, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., Hv] → [..., C] logits
        return self.net(h)


class RegionFeatureHead(nn.Module):
    """Masked region feature regression (UNITER's MRFR): a region state → its detector feature vector."""

    def __init__(self, dim: int, feat_dim: int):
        super().__init__()
        self.net = nn.Sequential(Transform(dim), nn.Linear(dim, feat_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., Hv] → [..., D]
        return self.net(h)


class RegionTokenHead(nn.Module):
    """μ-VLA's region-to-token classification: a region state → logits over the word vocabulary,
    through the (tied) word embeddings, after projecting the visual width to the text width."""

    def __init__(self, v_dim: int, word_embeddings: nn.Embedding):
        super().__init__()
        self.proj = nn.Linear(v_dim, word_embeddings.weight.shape[1])
        self.mlm = MLMHead(word_embeddings)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [M, Hv] → [M, V]
        return self.mlm(self.proj(h))


class ITMHead(nn.Module):
    """ViLBERT's fusion: tanh-pooled [CLS] ⊙ tanh-pooled [IMG] → one matching logit."""

    def __init__(self, t_dim: int, v_dim: int, fused: int):
        super().__init__()
        self.t_pool = nn.Linear(t_dim, fused)
        self.v_pool = nn.Linear(v_dim, fused)
        self.out = nn.Linear(fused, 1)

    def forward(self, cls: torch.Tensor, img: torch.Tensor) -> torch.Tensor:  # [B, Ht], [B, Hv] → [B]
        return self.out(torch.tanh(self.t_pool(cls)) * torch.tanh(self.v_pool(img))).squeeze(-1)


class GroundingHead(nn.Module):
    """Score a (phrase, region) pair: ``g = w · ReLU(W [p; r; p ⊙ r]) + b`` (f_align then the grounding layer).

    The phrase is the mean of its tokens (token level) or an LSTM's last state over them (phrase level).
    """

    def __init__(self, t_dim: int, v_dim: int, dim: int, phrase_repr: str = "lstm"):
        super().__init__()
        self.phrase_repr = phrase_repr
        self.lstm = nn.LSTM(t_dim, t_dim, batch_first=True) if phrase_repr == "lstm" else None
        self.p_proj = nn.Linear(t_dim, dim)
        self.r_proj = nn.Linear(v_dim, dim)
        self.f_align = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU())
        self.score = nn.Linear(dim, 1)  # the grounding layer

    def phrases(self, text: torch.Tensor, start: torch.Tensor, end: torch.Tensor, width: int | None = None) -> torch.Tensor:
        # text [B, T, H]; start/end [B, K] token span [start, end) → [B, K, H]. ``width``: the longest
        # span, when the caller knows it (the loader does); otherwise read back from the device.
        b, k = start.shape
        length = (end - start).clamp(min=1)  # padding pairs get a 1-token span
        width = int(length.max()) if width is None else width
        offs = torch.arange(width, device=text.device)
        idx = (start.unsqueeze(-1) + offs).clamp(max=text.shape[1] - 1)  # [B, K, W]
        tokens = torch.gather(text, 1, idx.view(b, k * width, 1).expand(-1, -1, text.shape[-1]))
        tokens = tokens.view(b, k, width, -1)  # [B, K, W, H]
        if self.lstm is None:
            valid = (offs < length.unsqueeze(-1)).unsqueeze(-1).to(tokens.dtype)  # [B, K, W, 1]
            return (tokens * valid).sum(2) / length.unsqueeze(-1).to(tokens.dtype)
        # Left-to-right LSTM: the state after the phrase's last token ignores the padding after it.
        # Run it in float32: recurrent kernels do not all support bf16 under autocast.
        with torch.autocast(device_type="cuda" if tokens.is_cuda else "cpu", enabled=False):
            seq, _ = self.lstm(tokens.reshape(b * k, width, -1).float())  # [B*K, W, H]
        last = (length.view(b * k) - 1).view(-1, 1, 1).expand(-1, 1, seq.shape[-1])
        return torch.gather(seq, 1, last).view(b, k, -1)

    def forward(self, text, regions, start, end, region_idx, width: int | None = None) -> torch.Tensor:
        # text [B, T, Ht], regions [B, R, Hv], start/end/region_idx [B, K] → logits [B, K]
        p = self.p_proj(self.phrases(text, start, end, width))
        r = self.r_proj(torch.gather(regions, 1, region_idx.unsqueeze(-1).expand(-1, -1, regions.shape[-1])))
        return self.pair_score(p, r)

    def score_regions(self, text, regions, start, end) -> torch.Tensor:
        # One phrase per example against every region (REC): text [B, T, Ht], regions [B, R, Hv],
        # start/end [B] → logits [B, R]. The phrase is encoded once, not once per region.
        p = self.p_proj(self.phrases(text, start.view(-1, 1), end.view(-1, 1)))  # [B, 1, D]
        r = self.r_proj(regions)  # [B, R, D]
        return self.pair_score(p.expand_as(r), r)

    def pair_score(self, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # p, r [B, K, D] → [B, K]
        return self.score(self.f_align(torch.cat([p, r, p * r], dim=-1))).squeeze(-1)
