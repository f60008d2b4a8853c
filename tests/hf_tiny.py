"""Tiny random Hugging Face teachers, saved to disk and loaded back exactly as a user loads real weights."""
from __future__ import annotations

from pathlib import Path

WORDS = ("a an the small medium large big red green blue yellow orange purple pink white black gray grey circle disc square "
         "triangle diamond rhombus star next to left right of above below beside near and is there in on image").split()


def tiny_vocab() -> list[str]:
    """BERT-style vocab where Grounding DINO's special ids hold: [CLS]=101, [SEP]=102, '.'=1012, '?'=1029."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(100, 100 + 1012 - len(vocab))]
    vocab += ["."] + [f"[unused{i}]" for i in range(2000, 2016)] + ["?", ","] + list(WORDS)
    assert vocab[101] == "[CLS]" and vocab[102] == "[SEP]" and vocab[1012] == "." and vocab[1029] == "?"
    return vocab


def save_tiny_grounding_dino(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                                   out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=20, num_feature_levels=3, max_text_len=32,
    )
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(out)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tok).save_pretrained(out)
    return out


def save_tiny_owlv2(out: Path, seed: int = 0) -> Path:
    """Tiny OWLv2 with a CLIP BPE tokenizer over a few words (BOS id 1 > 0, which OWLv2's query mask needs)."""
    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    out.mkdir(parents=True, exist_ok=True)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in sorted(set("".join(WORDS))):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in WORDS:  # merge each word left to right into one token
        cur = list(w[:-1]) + [w[-1] + "</w>"]
        while len(cur) > 1:
            merges.append((cur[0], cur[1]))
            vocab.setdefault(cur[0] + cur[1], len(vocab))
            cur = [cur[0] + cur[1]] + cur[2:]
    tok = CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)))
    torch.manual_seed(seed)
    cfg = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16),
        projection_dim=16,
    )
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(out)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok).save_pretrained(out)
    return out
