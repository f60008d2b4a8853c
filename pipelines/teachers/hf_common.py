"""What the Hugging Face detector teachers (Grounding DINO, OWLv2) share: loading from a local
directory (safetensors only), the image read, and keeping each phrase's ``top_k`` boxes."""
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


def model_digest(model_dir: str | Path) -> str:
    files = [Path(model_dir) / f for f in MODEL_FILES]
    files = [f for f in files if f.exists()]
    if not any(f.name == "model.safetensors" for f in files):
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (only safetensors weights are loaded)")
    return files_digest(files)


class HFDetectorTeacher(Teacher):
    """A ``transformers`` open-vocabulary detector loaded from ``model_dir``; subclasses say which
    model class and how its outputs become per-phrase boxes (``predict_one``)."""

    default_box_threshold = 0.3

    def __init__(self, **params):
        super().__init__(**params)
        self.model_dir = param(self.params, "model_dir", str, required=True)
        self.box_threshold = param(self.params, "box_threshold", float, self.default_box_threshold)
        self.top_k = param(self.params, "top_k", int, 3)
        self.threads = param(self.params, "torch_threads", int, 1)
        self.params = {k: v for k, v in self.params.items() if k != "model_dir"}  # fingerprint: what, not where
        self.params.update(box_threshold=self.box_threshold, top_k=self.top_k)
        self.model = None

    def model_class(self):
        raise NotImplementedError

    def weights_digest(self) -> str:
        return model_digest(self.model_dir)

    def load(self) -> "HFDetectorTeacher":
        import torch
        from transformers import AutoProcessor

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(self.threads)  # one worker per core; also keeps reductions reproducible
        self.torch = torch
        self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
        self.model = self.model_class().from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True).eval()
        return self

    @staticmethod
    def read_image(x: TeacherInput):
        from PIL import Image

        if not x.image_path or not remote_io.exists(x.image_path):
            raise FileNotFoundError(f"image {x.image_id}: no image file at {x.image_path!r}")
        with Image.open(io.BytesIO(remote_io.read_bytes(x.image_path))) as im:
            return im.convert("RGB")

    def top_boxes(self, scores: np.ndarray, boxes: np.ndarray) -> list[TeacherBox]:
        """``scores`` [Q, P] and ``boxes`` [Q, 4] → each phrase's ``top_k`` boxes above the threshold."""
        result = []
        for p in range(scores.shape[1]):
            order = np.argsort(-scores[:, p], kind="stable")
            for q in order[: self.top_k or None]:
                b = boxes[q]
                if scores[q, p] >= self.box_threshold and b[2] - b[0] > 0 and b[3] - b[1] > 0:
                    result.append(TeacherBox(p, tuple(float(v) for v in b), float(scores[q, p])))
        return result

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        raise NotImplementedError

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        if self.model is None:
            self.load()
        return [self.predict_one(x) if x.phrases else [] for x in batch]
