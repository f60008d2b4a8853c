"""The teacher interface: (image, phrases) → per phrase a list of (box, score).

A teacher is built from plain parameters (strings, numbers, local paths), reports a ``fingerprint``
(name, parameters, content hash of its weights), loads its model once per worker in ``load()`` and
answers a batch of captions in ``predict``. Nothing here touches a network hub.

Each teacher declares its parameters (:class:`Param`: type, default, valid range or choices) in
``PARAMS``; a parameter the teacher does not declare, or a value outside its range, is refused when
the teacher is built, before anything is fingerprinted or run.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass(frozen=True)
class Param:
    """One teacher parameter: its type, default, and valid values.

    ``lo``/``hi`` bound numbers (inclusive unless ``lo_open``/``hi_open``); ``choices`` lists the valid
    strings. ``range_text()`` is what an error message shows.
    """

    cast: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""
    valid: str = ""  # the valid values in words, where ``cast`` checks them itself

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.lo is None and self.hi is None:
            return self.valid
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def check(self, teacher: str, key: str, raw: Any) -> Any:
        """``raw`` (a ``--teacher-arg`` string or a Python value) → the typed value, or ValueError."""
        what = f"teacher {teacher!r}: parameter {key}={raw!r}"
        try:
            if self.cast is bool and isinstance(raw, str):
                if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif self.cast is int and isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            else:
                value = self.cast(raw)
        except (TypeError, ValueError):
            kind = self.cast.__name__ if self.cast in (int, float, str, bool) else "value"
            raise ValueError(f"{what} is not a valid {kind}" + (f" (valid: {self.range_text()})" if self.range_text() else "")) from None
        bad = False
        if self.choices is not None:
            bad = value not in self.choices
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                bad = True
            if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
                bad = True
            if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
                bad = True
        if bad:
            raise ValueError(f"{what} is out of range; valid: {self.range_text()}")
        return value


def check_params(teacher: str, spec: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` against ``spec`` by name and range; returns every declared parameter's value
    (the given one, typed, or its default). Unknown names are refused with the valid names listed."""
    unknown = sorted(set(params) - set(spec))
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, spec, n=1)) else repr(k) for k in unknown]
        raise ValueError(f"teacher {teacher!r}: unknown parameter {', '.join(hints)}; valid parameters: {', '.join(sorted(spec))}")
    values = {}
    for key, p in spec.items():
        raw = params.get(key)
        if raw is None or raw == "":
            if p.required:
                raise ValueError(f"teacher {teacher!r}: parameter {key!r} is required" + (f" ({p.help})" if p.help else ""))
            values[key] = p.default
        else:
            values[key] = p.check(teacher, key, raw)
    return values


class Teacher:
    """Base class; subclasses set ``name``, declare ``PARAMS`` and implement ``load`` and ``predict``."""

    name: str = ""
    PARAMS: dict[str, Param] = {}

    def __init__(self, **params: Any):
        self.values = check_params(self.name, self.PARAMS, params)
        self.params = dict(params)

    @classmethod
    def shares_model(cls, params: dict[str, Any]) -> bool:
        """Whether the worker's processes should share one loaded model (large models on an accelerator)."""
        return False

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

    def prefetch(self, batch: list[TeacherInput]) -> None:
        """A hint: ``batch`` is what :meth:`predict` gets next. A teacher that reads images starts decoding
        them now, while the current batch is on the device; the others ignore it."""

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
