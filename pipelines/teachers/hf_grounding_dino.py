"""Grounding DINO / MM-Grounding-DINO teacher through Hugging Face ``transformers``, from a local directory.

The caption's phrases are joined into the model's prompt format (``"a cat. a remote control."``); the
logits are per query × text token, and ``build_label_maps`` maps tokens to the phrase they belong to.
A query's score for a phrase is the max sigmoid over that phrase's tokens; each phrase keeps its
``top_k`` queries scoring at least ``box_threshold``. One caption per forward pass: padding a batch
would change the numbers, and the labels must not depend on how Beam batched the captions.
"""
from __future__ import annotations

from pipelines.teachers.base import TeacherInput
from pipelines.teachers.hf_common import HFDetectorTeacher
from schemas.records import TeacherBox


def prompt_of(phrases: list[str]) -> str:
    """Grounding DINO's prompt: lower-case phrases separated by '. ' ('.' and '?' are its delimiters)."""
    return " ".join(p.lower().replace(".", " ").replace("?", " ").strip() + "." for p in phrases)


class GroundingDinoTeacher(HFDetectorTeacher):
    name = "grounding_dino"
    default_box_threshold = 0.3

    def model_class(self):
        from transformers import GroundingDinoForObjectDetection

        return GroundingDinoForObjectDetection

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

        torch = self.torch
        image = self.read_image(x)
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
        return self.top_boxes(per_phrase.numpy(), boxes)
