"""OWLv2 teacher through Hugging Face ``transformers``, from a local directory.

OWLv2 takes the caption's phrases as one query list; its logits are per image patch × query, so
the phrase of a box is its query index directly. Images are padded to a square (bottom/right)
before resizing, so normalised boxes scale by ``max(width, height)``. Each phrase keeps its ``top_k``
patches scoring at least ``box_threshold``; one caption per forward pass, as for Grounding DINO.
"""
from __future__ import annotations

import io
import os

import numpy as np

from pipelines import remote_io
from pipelines.teachers.base import Teacher, TeacherInput, param
from pipelines.teachers.hf_grounding_dino import model_digest
from schemas.records import TeacherBox


class Owlv2Teacher(Teacher):
    name = "owlv2"

    def __init__(self, **params):
        super().__init__(**params)
        self.model_dir = param(self.params, "model_dir", str, required=True)
        self.box_threshold = param(self.params, "box_threshold", float, 0.1)
        self.top_k = param(self.params, "top_k", int, 3)
        self.threads = param(self.params, "torch_threads", int, 1)
        self.params = {k: v for k, v in self.params.items() if k != "model_dir"}
        self.params.update(box_threshold=self.box_threshold, top_k=self.top_k)
        self.model = None

    def weights_digest(self) -> str:
        return model_digest(self.model_dir)

    def load(self) -> "Owlv2Teacher":
        import torch
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(self.threads)
        self.torch = torch
        self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
        self.model = Owlv2ForObjectDetection.from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True).eval()
        return self

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        from PIL import Image

        if not x.phrases:
            return []
        if not x.image_path or not remote_io.exists(x.image_path):
            raise FileNotFoundError(f"image {x.image_id}: no image file at {x.image_path!r}")
        with Image.open(io.BytesIO(remote_io.read_bytes(x.image_path))) as im:
            image = im.convert("RGB")
        max_len = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(text=[[p.text.lower() for p in x.phrases]], images=image, return_tensors="pt",
                                padding="max_length", truncation=True, max_length=max_len)
        with self.torch.inference_mode():
            out = self.model(**inputs)
        scores = out.logits[0].sigmoid().numpy()  # [patches, P]
        cx, cy, w, h = out.pred_boxes[0].numpy().T
        side = float(max(x.image_w, x.image_h))  # padded square, in the region frame
        boxes = np.stack([(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side], axis=1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x.image_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, x.image_h)
        result = []
        for p in range(min(scores.shape[1], len(x.phrases))):
            order = np.argsort(-scores[:, p], kind="stable")
            for q in order[: self.top_k or None]:
                b = boxes[q]
                if scores[q, p] >= self.box_threshold and b[2] - b[0] > 0 and b[3] - b[1] > 0:
                    result.append(TeacherBox(p, tuple(float(v) for v in b), float(scores[q, p])))
        return result

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        if self.model is None:
            self.load()
        return [self.predict_one(x) for x in batch]
