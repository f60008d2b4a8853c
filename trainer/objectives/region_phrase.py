"""μ-VLA region–noun-phrase alignment on retrieved (weakly aligned) sentences.

A noun phrase of a retrieved sentence is linked to the region whose tag (detector class name)
embedding is most similar to the phrase's embedding. Phrase-guided masked region-to-token
classification: a masked region that a phrase links to must predict, from its output state over the
word vocabulary, the tokens of that phrase (a soft target spread evenly over them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.objectives.masked import IGNORE, Term


def link_phrases_to_regions(
    phrase_emb: torch.Tensor, region_tag_emb: torch.Tensor, region_mask: torch.Tensor, phrase_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most similar region per phrase by cosine similarity of embeddings.

    ``phrase_emb`` [B, P, E], ``region_tag_emb`` [B, N, E] (the embedding of each region's tag),
    ``region_mask`` [B, N] (True = a real region), ``phrase_mask`` [B, P] (True = a real phrase).
    Returns ``(link [B, P] long, similarity [B, P])``: ``link`` is -1 (similarity 0) for padding
    phrases and images without regions. Ties go to the lower region index.
    """
    if phrase_emb.shape[0] != region_tag_emb.shape[0] or region_tag_emb.shape[:2] != region_mask.shape:
        raise ValueError(f"shapes {tuple(phrase_emb.shape)}, {tuple(region_tag_emb.shape)}, {tuple(region_mask.shape)} do not fit")
    sim = torch.einsum("bpe,bne->bpn", F.normalize(phrase_emb.float(), dim=-1), F.normalize(region_tag_emb.float(), dim=-1))
    sim = sim.masked_fill(~region_mask.bool()[:, None, :], float("-inf"))
    best, link = sim.max(-1)  # max returns the first maximal index
    valid = region_mask.bool().any(-1, keepdim=True).expand_as(link)
    if phrase_mask is not None:
        valid = valid & phrase_mask.bool()
    return torch.where(valid, link, torch.full_like(link, -1)), torch.where(valid, best, torch.zeros_like(best))


def region_to_token_loss(region_token_logits: torch.Tensor, link: torch.Tensor, phrase_tokens: torch.Tensor, region_masked: torch.Tensor) -> Term:
    """Cross-entropy of a masked region's word-vocabulary logits against its linked phrase's tokens.

    ``region_token_logits`` [B, N, V]: the region output states projected onto the word vocabulary.
    ``link`` [B, P] (from :func:`link_phrases_to_regions`, -1 = none), ``phrase_tokens`` [B, P, L]
    token ids padded with ``IGNORE``, ``region_masked`` [B, N]. A phrase counts when it is linked to a
    masked region and has a token; its target is uniform over its tokens (a repeated token weighs
    more). Items: such phrases.
    """
    b, p = link.shape
    if phrase_tokens.shape[:2] != (b, p) or region_token_logits.shape[:2] != region_masked.shape:
        raise ValueError(f"shapes {tuple(region_token_logits.shape)}, {tuple(link.shape)}, {tuple(phrase_tokens.shape)} do not fit")
    v = region_token_logits.shape[-1]
    tok_ok = phrase_tokens != IGNORE
    linked = link >= 0
    region = link.clamp(min=0)
    masked = torch.gather(region_masked.bool(), 1, region) & linked & tok_ok.any(-1)  # [B, P]
    # Soft targets [B, P, V]: each of the phrase's tokens gets 1/len.
    target = torch.zeros(b, p, v, device=region_token_logits.device)
    target.scatter_add_(2, phrase_tokens.clamp(min=0), tok_ok.float())
    target = target / target.sum(-1, keepdim=True).clamp(min=1)
    logp = F.log_softmax(region_token_logits.float(), -1)  # [B, N, V]
    logp_linked = torch.gather(logp, 1, region[..., None].expand(b, p, v))  # [B, P, V]
    per_phrase = -(target * logp_linked).sum(-1)
    return Term((per_phrase * masked).sum(), masked.sum().float())
