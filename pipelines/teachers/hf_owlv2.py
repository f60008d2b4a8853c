"""OWLv2 teacher through Hugging Face ``transformers``, from a local directory.

OWLv2 takes the caption's phrases as one query list; its logits are per image patch × query, so
the phrase of a box is its query index directly. Images are padded to a square (bottom/right)
before resizing, so normalised boxes scale by ``max(width, height)``. Each phrase keeps its ``top_k``
patches scoring at least ``box_threshold``; one caption per forward pass, as for Grounding DINO.
"""
from __future__ import annotations

import numpy as np

from pipelines.teachers.base import TeacherInput
from pipelines.teachers.hf_common import HFDetectorTeacher
from schemas.records import TeacherBox


class Owlv2Teacher(HFDetectorTeacher):
    name = "owlv2"
    default_box_threshold = 0.1

    def model_class(self):
        from transformers import Owlv2ForObjectDetection

        return Owlv2ForObjectDetection

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        image = self.read_image(x)
        max_len = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(text=[[p.text.lower() for p in x.phrases]], images=image, return_tensors="pt",
                                padding="max_length", truncation=True, max_length=max_len)
        with self.torch.inference_mode():
            out = self.model(**inputs)
        scores = out.logits[0].sigmoid().numpy()[:, : len(x.phrases)]  # [patches, P]
        cx, cy, w, h = out.pred_boxes[0].numpy().T
        side = float(max(x.image_w, x.image_h))  # padded square, in the region frame
        boxes = np.stack([(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side], axis=1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x.image_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, x.image_h)
        return self.top_boxes(scores, boxes)
