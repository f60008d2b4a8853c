"""Transformer blocks for the visual stream and the co-attention that joins the two streams.

Post-LayerNorm as in BERT, so the visual and co-attention layers match the text encoder's style.
Masks are bool ``[B, L]`` with True on real tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of queries from one sequence over keys/values of another (or the same)."""

    def __init__(self, q_dim: int, kv_dim: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        assert hidden % heads == 0, f"hidden {hidden} is not divisible by {heads} heads"
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(q_dim, hidden)
        self.k = nn.Linear(kv_dim, hidden)
        self.v = nn.Linear(kv_dim, hidden)
        self.out = nn.Linear(hidden, q_dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        b, lq, _ = x.shape
        split = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731 [B, h, L, d]
        q, k, v = split(self.q(x)), split(self.k(ctx)), split(self.v(ctx))
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(a.transpose(1, 2).reshape(b, lq, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward, residual and post-LayerNorm (BERT layer)."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float):
        super().__init__()
        self.attn = Attention(dim, dim, dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ff = FeedForward(dim, inner, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, x, mask)))
        return self.norm2(x + self.ff(x))


class CoAttentionBlock(nn.Module):
    """ViLBERT's co-TRM: each stream attends to the other, then to itself, then a feed-forward.

    Both cross-attentions read the streams as they were on entry, so neither stream sees the other's
    update of the same block (the symmetric exchange of the ViLBERT paper).
    """

    def __init__(self, t_dim: int, v_dim: int, heads: int, t_inner: int, v_inner: int, dropout: float):
        super().__init__()
        co_dim = min(t_dim, v_dim)
        self.t_from_v = Attention(t_dim, v_dim, co_dim, heads, dropout)
        self.v_from_t = Attention(v_dim, t_dim, co_dim, heads, dropout)
        self.t_norm = nn.LayerNorm(t_dim, eps=1e-12)
        self.v_norm = nn.LayerNorm(v_dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.t_block = TransformerBlock(t_dim, heads, t_inner, dropout)
        self.v_block = TransformerBlock(v_dim, heads, v_inner, dropout)

    def forward(self, t, t_mask, v, v_mask):
        t2 = self.t_norm(t + self.drop(self.t_from_v(t, v, v_mask)))  # [B, T, Ht]
        v2 = self.v_norm(v + self.drop(self.v_from_t(v, t, t_mask)))  # [B, 1+R, Hv]
        return self.t_block(t2, t_mask), self.v_block(v2, v_mask)
