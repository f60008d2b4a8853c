"""Grounding DINO / MM-Grounding-DINO teacher through Hugging Face ``transformers``, from a local directory.

All phrases of an image (from all its captions) are joined into the model's prompt format
(``"a cat. a remote control."``), as few prompts as ``max_text_len`` allows. The logits are per
query × text token; each token is mapped to the phrase whose characters it covers (from the
tokenizer's offsets, so a phrase maps to exactly its own tokens). A query's score for a phrase is the
max sigmoid over that phrase's tokens: what the processor's ``post_process_grounded_object_detection``
gives when the logits outside the phrase are masked (``tests/test_teachers.py`` checks the two agree),
and its box is the processor's (centre → corners, times the frame size).

Text is always padded to ``max_text_len`` and a forward batch holds only same-size images, so a
phrase's numbers depend on its image and its prompt, not on how Beam batched the captions.
"""
from __future__ import annotations

import numpy as np

from pipelines.teachers.hf_common import HFDetectorTeacher, ImageWork, Prompt


def prompt_of(phrases: list[str]) -> str:
    """Grounding DINO's prompt: lower-case phrases separated by '. ' ('.' and '?' are its delimiters)."""
    return " ".join(clean_phrase(p) + "." for p in phrases)


def clean_phrase(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").replace("?", " ").split())


def token_phrase_index(offsets: np.ndarray, spans: list[tuple[int, int]], none: int) -> np.ndarray:
    """Tokenizer character offsets [L, 2] → the index of the phrase span each token lies in (``none`` if
    it lies in none: special tokens, the '.' separators, padding)."""
    out = np.full(len(offsets), none, np.int64)
    if not spans:
        return out
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    s, e = offsets[:, 0], offsets[:, 1]
    j = np.searchsorted(starts, s, side="right") - 1
    ok = (e > s) & (j >= 0) & (s < ends[np.clip(j, 0, None)])
    out[ok] = j[ok]
    return out


class GroundingDinoTeacher(HFDetectorTeacher):
    name = "grounding_dino"
    default_box_threshold = 0.3

    def model_class(self):
        from transformers import GroundingDinoForObjectDetection

        return GroundingDinoForObjectDetection

    def phrase_text(self, text: str) -> str:
        return clean_phrase(text)

    def text_limit(self) -> int:
        return int(self.model.config.max_text_len)

    def pack(self, texts: list[str]) -> list[Prompt]:
        """Greedy, in phrase order: a phrase joins the current prompt while [CLS] + tokens + [SEP] fit."""
        tok, limit = self.processor.tokenizer, self.text_limit()
        sizes = [len(ids) for ids in tok([t + "." for t in texts], add_special_tokens=False)["input_ids"]]
        prompts, cur, used = [], [], 2
        for j, n in enumerate(sizes):
            if cur and used + n > limit:
                prompts.append(cur)
                cur, used = [], 2
            cur.append(j)
            used += n  # a phrase longer than the limit alone is truncated: it keeps its first tokens
        if cur:
            prompts.append(cur)
        out = []
        for chunk in prompts:
            text, spans = "", []
            for j in chunk:
                if text:
                    text += " "
                spans.append((len(text), len(text) + len(texts[j])))
                text += texts[j] + "."
            out.append(Prompt(chunk, (text, spans)))
        return out

    def preprocess(self, image) -> dict:
        return dict(self.processor.image_processor(images=image, return_tensors="pt"))

    def launch(self, items: list[tuple[ImageWork, Prompt]]):
        torch = self.torch
        enc = self.processor.tokenizer([p.text[0] for _, p in items], padding="max_length", truncation=True, max_length=self.text_limit(),
                                       return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        # Each text token's phrase, known before the forward pass: every copy to the device is queued
        # before the model's kernels, and none makes the host wait for the GPU.
        B, T = len(items), self.text_limit()  # text padded to max_text_len: logits are [B, Q, T]
        most = max(len(p.texts) for _, p in items)
        index = np.full((B, T), most, np.int64)
        for b, (_, p) in enumerate(items):
            index[b, : offsets.shape[1]] = token_phrase_index(offsets[b], p.text[1], most)
        index_t = self.to_device(torch.from_numpy(index))
        inputs = {k: self.to_device(v) for k, v in enc.items()}
        for k in ("pixel_values", "pixel_mask"):
            inputs[k] = self.cat_to_device([w.pixels[k] for w, _ in items])
        with torch.inference_mode(), self.autocast():
            out = self.model(**inputs)
        probs = out.logits.float().sigmoid()  # [B, Q, max_text_len]; tokens past the text have logit -inf
        Q = probs.shape[1]
        index_t = index_t[:, None, :].expand(B, Q, T)
        # per phrase: max over its tokens (a segment max; column `most` collects the tokens of no phrase)
        per_phrase = torch.zeros(B, Q, most + 1, device=probs.device).scatter_reduce_(2, index_t, probs, reduce="amax")
        cx, cy, w, h = out.pred_boxes.float().unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        return items, self.to_host(per_phrase, boxes)

    def collect(self, launched) -> list[tuple[np.ndarray, np.ndarray]]:
        items, copies = launched
        per_phrase, boxes = self.from_host(copies)
        return [(per_phrase[b, :, : len(p.texts)], boxes[b]) for b, (_, p) in enumerate(items)]
