"""Grounding DINO / MM-Grounding-DINO teacher through Hugging Face ``transformers``, from a local directory.

The caption's phrases are joined into the model's prompt format (``"a cat. a remote control."``); the
logits are per query × text token, and ``build_label_maps`` maps tokens to the phrase they belong to.
A query's score for a phrase is the max sigmoid over that phrase's tokens; each phrase keeps its
``top_k`` queries scoring at least ``box_threshold``. One caption per forward pass: padding a batch
would change the numbers, and the labels must not depend on how Beam batched the captions.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from pipelines import remote_io
from pipelines.teachers.base import Teacher, TeacherInput, param
from schemas.manifest import files_digest
from schemas.records import TeacherBox

MODEL_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def prompt_of(phrases: list[str]) -> str:
    """Grounding DINO's prompt: lower-case phrases separated by '. ' ('.' and '?' are its delimiters)."""
    return " ".join(p.lower().replace(".", " ").replace("?", " ").strip() + "." for p in phrases)


def model_digest(model_dir: str | Path) -> str:
    files = [Path(model_dir) / f for f in MODEL_FILES]
    files = [f for f in files if f.exists()]
    if not any(f.name == "model.safetensors" for f in files):
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (only safetensors weights are loaded)")
    return files_digest(files)


class GroundingDinoTeacher(Teacher):
    name = "grounding_dino"

    def __init__(self, **params):
        super().__init__(**params)
        self.model_dir = param(self.params, "model_dir", str, required=True)
        self.box_threshold = param(self.params, "box_threshold", float, 0.3)
        self.top_k = param(self.params, "top_k", int, 3)
        self.threads = param(self.params, "torch_threads", int, 1)
        self.params = {k: v for k, v in self.params.items() if k != "model_dir"}  # fingerprint: what, not where
        self.params.update(box_threshold=self.box_threshold, top_k=self.top_k)
        self.model = None

    def weights_digest(self) -> str:
        return model_digest(self.model_dir)

    def load(self) -> "GroundingDinoTeacher":
        import torch
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(self.threads)  # one worker per core; also keeps reductions reproducible
        self.torch = torch
        self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
        self.model = GroundingDinoForObjectDetection.from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True).eval()
        return self

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        from PIL import Image
        from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

        torch = self.torch
        if not x.phrases:
            return []
        if not x.image_path or not remote_io.exists(x.image_path):
            raise FileNotFoundError(f"image {x.image_id}: no image file at {x.image_path!r}")
        with Image.open(io.BytesIO(remote_io.read_bytes(x.image_path))) as im:
            image = im.convert("RGB")
        max_len = self.model.config.max_text_len
        inputs = self.processor(images=image, text=prompt_of([p.text for p in x.phrases]), return_tensors="pt", truncation=True, max_length=max_len)
        with torch.inference_mode():
            out = self.model(**inputs)
        probs = out.logits[0].sigmoid()  # [Q, L]
        label_map = build_label_maps(out.logits, inputs["input_ids"])[0].bool()  # [groups, L], one group per phrase
        if label_map.shape[0] > len(x.phrases):
            raise ValueError(f"caption {x.caption_id}: {label_map.shape[0]} token groups for {len(x.phrases)} phrases")
        # [Q, groups]: max over each phrase's tokens; phrases cut off by truncation get no group, hence no box
        per_phrase = torch.stack([probs[:, m].max(dim=1).values for m in label_map], dim=1) if len(label_map) else probs[:, :0]
        cx, cy, w, h = out.pred_boxes[0].unbind(-1)
        W, H = float(x.image_w), float(x.image_h)  # region frame: the boxes are matched against the detector's
        boxes = torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], dim=-1)
        boxes = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H), boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], -1).numpy()
        scores = per_phrase.numpy()
        result = []
        for p in range(scores.shape[1]):
            order = np.argsort(-scores[:, p], kind="stable")
            kept = [q for q in order[: self.top_k or None] if scores[q, p] >= self.box_threshold]
            for q in kept:
                b = boxes[q]
                if b[2] - b[0] > 0 and b[3] - b[1] > 0:
                    result.append(TeacherBox(p, tuple(float(v) for v in b), float(scores[q, p])))
        return result

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        if self.model is None:
            self.load()
        return [self.predict_one(x) for x in batch]
