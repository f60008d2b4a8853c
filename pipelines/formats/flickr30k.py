"""Flickr30k Entities files: ``Sentences/<id>.txt`` markup and ``Annotations/<id>.xml`` boxes.

Read as the dataset's official parser reads them (``get_sentence_data`` / ``get_annotations`` in
BryanPlummer/flickr30k_entities ``flickr30k_entities_utils.py``; tests/official_parsers.py holds a port
that the tests compare against):

* Markup: ``[/EN#18/people A man] in [/EN#19/clothing an orange hat] .``; sentences are tokenised
  with spaces around punctuation, and the official parser splits on whitespace, so an entity starts
  and ends at a token boundary. The plain sentence is the markup with brackets and tags removed
  (tokens joined by single spaces, as the official parser returns it); each entity phrase keeps its
  character span in that sentence.
* XML boxes are 1-based inclusive pixel coordinates (Pascal VOC style): the official parser
  subtracts 1 from each. Here ``[xmin-1, ymin-1, xmax, ymax]`` is the project's exclusive ``xyxy``
  (0-based inclusive end + 1). The XML is parsed with ``defusedxml`` (no entity expansion, no DTDs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ssga_io import fs

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as ET

from schemas.boxes import inclusive_to_exclusive

_ENTITY = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)*)\s+([^\]]*)\]")


class Flickr30kError(ValueError):
    """A Flickr30k Entities file is missing or malformed; the message names the file."""


@dataclass
class EntityPhrase:
    entity_id: str
    types: list[str]
    text: str
    start: int
    end: int


@dataclass
class GroundTruthSentence:
    text: str
    phrases: list[EntityPhrase] = field(default_factory=list)


def parse_sentence(markup: str) -> GroundTruthSentence:
    """One markup line → plain text and entity phrase spans. Whitespace runs collapse to one space,
    as the official parser's ``split()`` + ``' '.join`` does."""
    markup = " ".join(markup.split())
    out: list[str] = []
    phrases: list[EntityPhrase] = []
    pos = 0
    length = 0
    for m in _ENTITY.finditer(markup):
        before = markup[pos : m.start()]
        out.append(before)
        length += len(before)
        text = m.group(3)
        types = [t for t in m.group(2).split("/") if t]
        phrases.append(EntityPhrase(m.group(1), types, text, length, length + len(text)))
        out.append(text)
        length += len(text)
        pos = m.end()
    out.append(markup[pos:])
    return GroundTruthSentence("".join(out), phrases)


def read_sentences(path: str | Path) -> list[GroundTruthSentence]:
    if not fs.exists(path):
        raise Flickr30kError(f"{path}: no such Sentences file")
    return [parse_sentence(line.rstrip("\r\n")) for line in fs.read_text(path).splitlines() if line.strip()]


def read_annotation(path: str | Path) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    """``((width, height), {entity_id: float32 [K, 4] exclusive xyxy})``; entities without a box
    (``<nobndbox>``, ``<scene>``) are absent. XML coordinates are 1-based inclusive."""
    if not fs.exists(path):
        raise Flickr30kError(f"{path}: no such Annotations file")
    try:
        root = ET.fromstring(fs.read_bytes(path))
        size = root.find("size")
        wh = (int(size.findtext("width")), int(size.findtext("height"))) if size is not None else (0, 0)
        boxes: dict[str, list[list[float]]] = {}
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                continue  # scene / nobndbox entities have no box
            box = [float(bb.findtext(k)) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax")]  # 1-based → 0-based
            for name in obj.findall("name"):
                boxes.setdefault(name.text.strip(), []).append(box)
    except (ET.ParseError, DefusedXmlException, TypeError, ValueError, AttributeError) as e:
        raise Flickr30kError(f"{path}: malformed Flickr30k annotation: {e}") from e
    return wh, {k: inclusive_to_exclusive(np.asarray(v, np.float32)) for k, v in boxes.items()}


class Flickr30kGroundTruth:
    """Ground-truth boxes of caption phrases, looked up by ``caption_id = "<image_id>#<k>"``."""

    def __init__(self, root: str | Path):
        self.root = str(root)

    def image(self, image_id: str) -> tuple[list[GroundTruthSentence], dict[str, np.ndarray]]:
        sentences = read_sentences(fs.join(self.root, "Sentences", f"{image_id}.txt"))
        _, boxes = read_annotation(fs.join(self.root, "Annotations", f"{image_id}.xml"))
        return sentences, boxes

    @staticmethod
    def phrase_boxes(
        caption: str, k: int, spans: list[tuple[int, int]], sentences: list[GroundTruthSentence], boxes: dict[str, np.ndarray]
    ) -> list[np.ndarray | None]:
        """GT boxes for each ``[start, end)`` span of caption ``k``; ``None`` where no GT applies.

        A phrase maps to every markup entity whose span overlaps it. ``None`` means "no ground
        truth" (sentence text differs from the caption, no overlapping entity, or entity without box),
        which quality metrics skip rather than count as negative.
        """
        if k >= len(sentences) or sentences[k].text != caption:
            return [None] * len(spans)
        out: list[np.ndarray | None] = []
        for start, end in spans:
            found = [boxes[e.entity_id] for e in sentences[k].phrases if e.start < end and start < e.end and e.entity_id in boxes]
            out.append(np.concatenate(found, axis=0) if found else None)
        return out
