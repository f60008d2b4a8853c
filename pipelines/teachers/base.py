"""The teacher interface: (image, phrases) → per phrase a list of (box, score).

A teacher is built from plain parameters (strings, numbers, local paths), reports a ``fingerprint``
(name, parameters, content hash of its weights), loads its model once per worker in ``load()`` and
answers a batch of captions in ``predict``. Nothing here touches a network hub.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.manifest import fingerprint
from schemas.records import Phrase, TeacherBox


@dataclass
class TeacherInput:
    """What a teacher may look at for one caption. Pixel teachers open ``image_path``;
    tag teachers use the detector's region boxes and class ids; ground-truth teachers the ids."""

    caption_id: str
    image_id: str
    caption: str
    phrases: list[Phrase]
    image_w: int
    image_h: int
    region_boxes: np.ndarray  # float32 [N, 4] xyxy exclusive
    region_classes: np.ndarray | None = None  # int [N] detector class id (1-based; 0 = background), if known
    image_path: str = ""
    region_class_conf: np.ndarray | None = None  # float [N] detector probability of region_classes, if known


class Teacher:
    """Base class; subclasses set ``name`` and implement ``load`` and ``predict``."""

    name: str = ""

    def __init__(self, **params: Any):
        self.params = dict(params)

    def weights_digest(self) -> str:
        """Content hash of the weights this teacher reads ('' when it has none)."""
        return ""

    @property
    def fingerprint(self) -> str:
        # Hashing weights reads every byte of them: do it once per teacher object.
        if getattr(self, "_fingerprint", None) is None:
            self._weights = self.weights_digest()
            self._fingerprint = f"{self.name}-{fingerprint(self.name, self.params, self._weights)}"
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        fp = self.fingerprint
        return {"name": self.name, "params": self.params, "weights_digest": self._weights, "fingerprint": fp}

    def load(self) -> "Teacher":
        return self

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        raise NotImplementedError


def param(params: dict[str, Any], key: str, cast, default: Any = None, required: bool = False):
    """Read a teacher parameter given as ``--teacher-arg key=value`` (a string) or as a Python value."""
    if key not in params or params[key] in (None, ""):
        if required:
            raise ValueError(f"teacher parameter {key!r} is required")
        return default
    v = params[key]
    if cast is bool and isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return cast(v)
