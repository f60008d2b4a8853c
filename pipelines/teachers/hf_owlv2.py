"""OWLv2 teacher through Hugging Face ``transformers``, from a local directory.

OWLv2 takes one query list per image: all phrases of the image (from all its captions, de-duplicated)
go into one forward pass; its logits are per image patch × query, so a box's phrase is its query index
directly. Images are padded to a square (bottom/right) before resizing, so normalised boxes scale by
``max(width, height)`` of the frame, as the processor's ``post_process_object_detection`` does
(``tests/test_teachers.py`` checks the two agree). The image side of OWLv2 does not look at the text,
and each query is encoded on its own, so a phrase's numbers do not depend on its batch companions.
"""
from __future__ import annotations

import numpy as np

from pipelines.teachers.hf_common import HFDetectorTeacher, ImageWork, Prompt


class Owlv2Teacher(HFDetectorTeacher):
    name = "owlv2"
    default_box_threshold = 0.1

    def model_class(self):
        from transformers import Owlv2ForObjectDetection

        return Owlv2ForObjectDetection

    def pack(self, texts: list[str]) -> list[Prompt]:
        return [Prompt(list(range(len(texts))), list(texts))] if texts else []

    def preprocess(self, image) -> dict:
        return {"pixel_values": self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]}

    def to_frame(self, boxes: np.ndarray, W: float, H: float) -> np.ndarray:
        return boxes * np.float32(max(W, H))  # the padded square's side

    def launch(self, items: list[tuple[ImageWork, Prompt]]):
        torch = self.torch
        most = max(len(p.text) for _, p in items)
        queries = [q for _, p in items for q in p.text + [" "] * (most - len(p.text))]  # padded as the processor pads
        enc = self.processor.tokenizer(queries, padding="max_length", truncation=True,
                                       max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
        inputs = {k: self.to_device(v) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        inputs["pixel_values"] = self.cat_to_device([w.pixels["pixel_values"] for w, _ in items])
        with torch.inference_mode(), self.autocast():
            out = self.model(**inputs)
        scores = out.logits.float().sigmoid()  # [B, patches, most]
        cx, cy, w, h = out.pred_boxes.float().unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        return items, self.to_host(scores, boxes)

    def collect(self, launched) -> list[tuple[np.ndarray, np.ndarray]]:
        items, copies = launched
        scores, boxes = self.from_host(copies)
        return [(scores[b, :, : len(p.text)], boxes[b]) for b, (_, p) in enumerate(items)]
