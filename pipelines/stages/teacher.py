"""The ``teacher`` stage: each image's phrases and regions (grouped once, by the graph) → Beam RunInference with a teacher.

Every phrase record ends as a teacher record or a dead letter: its image is missing from the region
source, the teacher raised on it, or the teacher's answer breaks the record contract. The image's
group travels on past the teacher (output ``images``), so match → labels need no second shuffle.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from ssga_io import fs
from pipelines.formats.captions import caption_sort_key
from pipelines.stages.stage_io import RegionInfo
from pipelines.teachers import REGISTRY, Teacher, TeacherInput, build_teacher
from schemas.manifest import dead_letter
from schemas.records import PhraseRecord, TeacherBox, TeacherRecord, teacher_problem

log = logging.getLogger(__name__)
STAGE = "teacher"
DEAD = "dead"
IMAGES = "images"  # per image: (regions, [(PhraseRecord, TeacherRecord)]), the labels stage's input


@dataclass
class TeacherResult:
    input: TeacherInput
    boxes: list[TeacherBox] | None
    error: str = ""


@dataclass
class ImageWork:
    """One image on its way through teacher → match → labels: its region samples (sorted by shard and
    key), its captions' teacher inputs (in caption order) and, after RunInference, their results."""

    image_id: str
    regions: list[RegionInfo]
    inputs: list[TeacherInput]
    results: list[TeacherResult] | None = None


class TeacherModelHandler(ModelHandler[ImageWork, ImageWork, Teacher]):
    """RunInference adapter: an element is one image with all its captions (:class:`ImageWork`), answered
    with the same work and its ``results`` filled in; a batch is several images.

    The teacher sees the whole batch at once, so a pixel teacher decodes each image once and puts all
    of an image's phrases into as few prompts as fit. A failing batch is retried image by image, then
    caption by caption, so one bad image or caption costs only itself.

    ``share_model``: one model copy per worker machine, shared by its processes (Beam's
    ``large_model``), instead of one per process; ``None`` lets the teacher decide (the Hugging Face
    detectors share unless forced onto the CPU: one copy per GPU). Threads of a process always share
    their process's copy.
    """

    def __init__(self, name: str, params: dict[str, Any], min_batch_size: int = 1, max_batch_size: int = 16,
                 share_model: bool | None = None, model_copies: int | None = None):
        if share_model is None:
            share_model = REGISTRY[name].shares_model(params) if name in REGISTRY else False
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, large_model=bool(share_model),
                         model_copies=model_copies)
        self.name, self.teacher_params = name, dict(params)

    def load_model(self) -> Teacher:
        t0 = time.perf_counter()
        teacher = build_teacher(self.name, self.teacher_params).load()
        where = getattr(teacher, "device", "cpu")
        log.info("loaded teacher %s on %s in %.1fs (pid %d, shared=%s)", self.name, where, time.perf_counter() - t0, os.getpid(),
                 self.share_model_across_processes())
        return teacher

    @staticmethod
    def _predict(model: Teacher, xs: list[TeacherInput]) -> list[TeacherResult]:
        return [TeacherResult(x, b) for x, b in zip(xs, model.predict(xs), strict=True)]

    def run_inference(self, batch: Sequence[ImageWork], model: Teacher, inference_args=None) -> Iterable[ImageWork]:
        images = [list(work.inputs) for work in batch]
        try:
            flat = self._predict(model, [x for group in images for x in group])
            out, k = [], 0
            for group in images:
                out.append(flat[k : k + len(group)])
                k += len(group)
        except Exception:  # noqa: BLE001 - isolate the culprit below
            out = [self._isolate(model, group) for group in images]
        return [ImageWork(work.image_id, work.regions, work.inputs, results) for work, results in zip(batch, out, strict=True)]

    def _isolate(self, model: Teacher, group: list[TeacherInput]) -> list[TeacherResult]:
        try:
            return self._predict(model, group)
        except Exception:  # noqa: BLE001
            out = []
            for x in group:
                try:
                    out.append(TeacherResult(x, model.predict([x])[0]))
                except Exception as e:  # noqa: BLE001 - becomes a dead letter with its reason
                    out.append(TeacherResult(x, None, f"{type(e).__name__}: {e}"))
            return out

    def get_num_bytes(self, batch: Sequence[ImageWork]) -> int:
        return sum(len(w.inputs) for w in batch)  # the default pickles every batch just to measure it

    def get_metrics_namespace(self) -> str:
        return f"ssga_teacher_{self.name}"


class MakeTeacherInputs(beam.DoFn):
    """``(image_id, {"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]})`` → one :class:`ImageWork`
    per image with captions and regions; dead letters for captions of an image missing from the
    regions; the image's ``(regions, [])`` on output ``images`` when it has regions but no caption
    (its label sample has zero phrases)."""

    def __init__(self, images_root: str, images_dir: str = ""):
        self.images_root, self.images_dir = images_root, images_dir

    def image_path(self, url: str) -> str:
        if self.images_dir:
            return fs.join(self.images_dir, os.path.basename(url.split("?", 1)[0]))
        return url if os.path.isabs(url) or "://" in url else fs.join(self.images_root, url)

    def process(self, item):
        image_id, group = item
        phrases = sorted(group["phrases"], key=lambda pu: caption_sort_key(pu[0].caption_id))
        regions = sorted(group["regions"], key=lambda r: (r.shard, r.key))
        if not phrases:
            if regions:
                yield beam.pvalue.TaggedOutput(IMAGES, (regions, []))
            return
        if not regions:
            for rec, url in phrases:
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, rec.caption_id, url, f"image {image_id!r} is not in the region source"))
            return
        r = regions[0]
        yield ImageWork(image_id, regions, [
            TeacherInput(rec.caption_id, image_id, rec.caption, rec.phrases, r.image_w, r.image_h, r.boxes, r.classes, self.image_path(url), r.class_conf)
            for rec, url in phrases
        ])


class CheckTeacherOutput(beam.DoFn):
    """:class:`ImageWork` with results → ``(PhraseRecord, TeacherRecord)`` per caption (main), a dead letter
    naming each failure (``dead``), and the image's ``(regions, [(PhraseRecord, TeacherRecord)])`` (``images``)."""

    def __init__(self, teacher_fingerprint: str):
        self.fp = teacher_fingerprint

    def check(self, res: TeacherResult) -> tuple[PhraseRecord, TeacherRecord] | dict:
        """The caption's records, or its dead letter."""
        x = res.input
        if res.boxes is None:
            return dead_letter(STAGE, x.caption_id, x.image_path, f"teacher failed: {res.error}")
        rec = TeacherRecord(x.caption_id, x.image_id, self.fp, len(x.phrases), sorted(res.boxes, key=lambda b: (b.phrase_index, -b.score, b.box)))
        reason = teacher_problem(rec)
        if reason:
            return dead_letter(STAGE, x.caption_id, x.image_path, f"invalid teacher output: {reason}")
        return PhraseRecord(x.caption_id, x.image_id, x.caption, x.phrases), rec

    def process(self, work: ImageWork):
        captions = []
        for res in work.results or []:
            out = self.check(res)
            if isinstance(out, dict):
                yield beam.pvalue.TaggedOutput(DEAD, out)
            else:
                captions.append(out)
                yield out
        yield beam.pvalue.TaggedOutput(IMAGES, (work.regions, captions))


class RunTeacher(beam.PTransform):
    """``(image_id, {"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]})`` (grouped by image) →
    ``records`` ``(PhraseRecord, TeacherRecord)``, ``dead`` letters, and ``images``: per image of the regions,
    ``(regions, [(PhraseRecord, TeacherRecord)])`` for match → labels, no further shuffle needed."""

    def __init__(self, handler: TeacherModelHandler, teacher_fingerprint: str, images_root: str, images_dir: str = ""):
        super().__init__()
        self.handler, self.fp = handler, teacher_fingerprint
        self.images_root, self.images_dir = images_root, images_dir

    def expand(self, by_image):
        work = by_image | "Inputs" >> beam.ParDo(MakeTeacherInputs(self.images_root, self.images_dir)).with_outputs(DEAD, IMAGES, main="work")
        results = work.work | "RunInference" >> RunInference(self.handler)
        checked = results | "Check" >> beam.ParDo(CheckTeacherOutput(self.fp)).with_outputs(DEAD, IMAGES, main="records")
        dead = (work[DEAD], checked[DEAD]) | "DeadLetters" >> beam.Flatten()
        images = (work[IMAGES], checked[IMAGES]) | "Images" >> beam.Flatten()
        return {"records": checked.records, "dead": dead, "images": images}
