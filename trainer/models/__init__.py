"""Pre-training model = encoder (single- or dual-stream) + the four heads (+ μ-VLA's two).

``PretrainModel.forward(batch)`` returns the logits the losses need; it is the one place to read
what each head sees. It also returns the encoder's ``token_states`` and ``region_states`` (partial OT
aligns them). With ``mu_vla_heads`` it has a masked-region-feature-regression head
(``region_feat_pred`` at the masked regions) and a region-to-token head (``r2t_logits`` at the
regions a batch names in ``r2t_pos``); other methods' checkpoints do not have these weights.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.models.dual_stream import DualStreamEncoder
from trainer.models.heads import GroundingHead, ITMHead, MLMHead, RegionClassHead, RegionFeatureHead, RegionTokenHead
from trainer.models.single_stream import SingleStreamEncoder
from trainer.data.text import local_bert_dir


class PretrainModel(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, phrase_repr: str = "lstm", feat_dim: int = 0, mu_vla_heads: bool = False):
        super().__init__()
        self.encoder = encoder
        t, v = encoder.text_dim, encoder.visual_dim
        self.mlm = MLMHead(encoder.bert.embeddings.word_embeddings)
        self.region_cls = RegionClassHead(v, num_classes)
        self.itm = ITMHead(t, v, max(t, v))
        self.grounding = GroundingHead(t, v, min(t, v), phrase_repr)
        self.region_feat = RegionFeatureHead(v, feat_dim) if mu_vla_heads else None
        self.region_token = RegionTokenHead(v, encoder.bert.embeddings.word_embeddings) if mu_vla_heads else None

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        enc = self.encoder(batch["input_ids"], batch["text_mask"], batch["feat"], batch["boxes"], batch["region_mask"])
        # Heads see only the masked positions, gathered by index (the loader's ``mlm_pos``/``mrc_pos``):
        # the vocabulary projection runs on ~15% of the tokens, and no boolean mask syncs the host.
        text = enc.text.reshape(-1, enc.text.shape[-1])
        regions = enc.regions.reshape(-1, enc.regions.shape[-1])
        masked_regions = regions.index_select(0, batch["mrc_pos"])
        out = {
            "mlm_logits": self.mlm(text.index_select(0, batch["mlm_pos"])),  # [M, V], M = masked tokens in the batch
            "region_logits": self.region_cls(masked_regions),  # [Rm, C]
            "itm_logit": self.itm(enc.text[:, 0], enc.image),  # [B]
            "gnd_logit": self.grounding(  # [B, K]
                enc.text, enc.regions, batch["pair_start"], batch["pair_end"], batch["pair_region"], batch.get("pair_width")
            ),
            "token_states": enc.text,  # [B, T, Ht]
            "region_states": enc.regions,  # [B, R, Hv]
        }
        if self.region_feat is not None:
            out["region_feat_pred"] = self.region_feat(masked_regions)  # [Rm, D]
        if self.region_token is not None and "r2t_pos" in batch:
            out["r2t_logits"] = self.region_token(regions.index_select(0, batch["r2t_pos"]))  # [P, V]
        return out


def build_text_encoder(cfg: TrainConfig, vocab_size: int) -> nn.Module:
    """A transformers ``BertModel`` (sdpa attention): random init, or from a local checkpoint dir."""
    from transformers import BertConfig, BertModel

    if cfg.text_init == "random":
        bert_cfg = BertConfig(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
        )
        bert_cfg._attn_implementation = "sdpa"  # bool masks, as the visual layers use
        return BertModel(bert_cfg, add_pooling_layer=False)
    bert = BertModel.from_pretrained(
        local_bert_dir(cfg.text_init), local_files_only=True, use_safetensors=True, add_pooling_layer=False, attn_implementation="sdpa",
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
    )
    if bert.config.vocab_size < vocab_size:
        raise ValueError(f"{cfg.text_init}: vocabulary of {bert.config.vocab_size} is smaller than the tokenizer's {vocab_size}")
    return bert


def build_model(cfg: TrainConfig, feat_dim: int, num_classes: int, vocab_size: int) -> PretrainModel:
    bert = build_text_encoder(cfg, vocab_size)
    if cfg.model == "single":
        encoder = SingleStreamEncoder(bert, feat_dim, cfg.location, cfg.dropout)
    else:
        encoder = DualStreamEncoder(
            bert, feat_dim, cfg.v_hidden_size, cfg.v_layers, cfg.co_layers, cfg.num_heads, cfg.location, cfg.dropout
        )
    return PretrainModel(encoder, num_classes, cfg.phrase_repr, feat_dim, mu_vla_heads=cfg.method == "mu_vla")
