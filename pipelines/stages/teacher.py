"""The ``teacher`` stage: each block of images' phrases and regions (grouped once, by the graph) → Beam RunInference with a teacher.

Every phrase record ends as a teacher record or a dead letter: its image is missing from the region
source, the teacher raised on it, or the teacher's answer breaks the record contract. Each image's
regions and records travel on past the teacher (output ``images``), so match → labels need no second
shuffle. Elements are blocks of images (:class:`~pipelines.stages.stage_io.Batch`), so Beam's
per-element cost is paid per block; the model handler hands the teacher a few images at a time.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from ssga_io import fs
from pipelines.formats.captions import caption_sort_key
from pipelines.stages.stage_io import Batch, RegionInfo
from pipelines.teachers import REGISTRY, Teacher, TeacherInput, build_teacher
from schemas.manifest import dead_letter
from schemas.records import PhraseRecord, TeacherBox, TeacherRecord, teacher_problem

log = logging.getLogger(__name__)
STAGE = "teacher"
DEAD = "dead"
IMAGES = "images"  # per block: Batch of (regions, [(PhraseRecord, TeacherRecord)]) per image, the labels stage's input


@dataclass
class TeacherResult:
    input: TeacherInput
    boxes: list[TeacherBox] | None
    error: str = ""


@dataclass
class ImageWork:
    """One image on its way through teacher → match → labels: its region samples (sorted by shard and
    key), its captions' teacher inputs (in caption order, none when no caption survived) and, after
    RunInference, their results."""

    image_id: str
    regions: list[RegionInfo]
    inputs: list[TeacherInput]
    results: list[TeacherResult] | None = None


class TeacherModelHandler(ModelHandler[Batch, Batch, Teacher]):
    """RunInference adapter: an element is a block of images (``Batch[ImageWork]``, each image with all
    its captions), answered with the same block, every image's ``results`` filled in. The teacher sees
    ``images_per_batch`` images (those with captions) at a time.

    The teacher sees a whole batch at once, so a pixel teacher decodes each image once and puts all
    of an image's phrases into as few prompts as fit. A failing batch is retried image by image, then
    caption by caption, so one bad image or caption costs only itself.

    ``share_model``: one model copy per worker machine, shared by its processes (Beam's
    ``large_model``), instead of one per process; ``None`` lets the teacher decide (the Hugging Face
    detectors share unless forced onto the CPU: one copy per GPU). Threads of a process always share
    their process's copy.
    """

    def __init__(self, name: str, params: dict[str, Any], images_per_batch: int = 16, share_model: bool | None = None,
                 model_copies: int | None = None):
        if images_per_batch < 1:
            raise ValueError(f"images_per_batch must be >= 1, got {images_per_batch}")
        if share_model is None:
            share_model = REGISTRY[name].shares_model(params) if name in REGISTRY else False
        # One block per call: a block already holds many images, and a smaller unit keeps memory flat.
        super().__init__(min_batch_size=1, max_batch_size=1, large_model=bool(share_model), model_copies=model_copies)
        self.name, self.teacher_params, self.images_per_batch = name, dict(params), images_per_batch

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

    def run_inference(self, batch: Sequence[Batch], model: Teacher, inference_args=None) -> Iterable[Batch]:
        return [self._run_block(block, model) for block in batch]

    def _run_block(self, block: Batch, model: Teacher) -> Batch:
        results: dict[int, list[TeacherResult]] = {}
        todo = [i for i, work in enumerate(block) if work.inputs]
        chunks = [todo[k : k + self.images_per_batch] for k in range(0, len(todo), self.images_per_batch)]
        for n, idx in enumerate(chunks):
            if n + 1 < len(chunks):  # an image teacher decodes the next images while these are on the device
                model.prefetch([x for i in chunks[n + 1] for x in block[i].inputs])
            results.update(zip(idx, self._run_images(model, [list(block[i].inputs) for i in idx]), strict=True))
        return Batch(ImageWork(w.image_id, w.regions, w.inputs, results.get(i, [])) for i, w in enumerate(block))

    def _run_images(self, model: Teacher, images: list[list[TeacherInput]]) -> list[list[TeacherResult]]:
        try:
            flat = self._predict(model, [x for group in images for x in group])
            out, k = [], 0
            for group in images:
                out.append(flat[k : k + len(group)])
                k += len(group)
            return out
        except Exception:  # noqa: BLE001 - isolate the culprit below
            return [self._isolate(model, group) for group in images]

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

    def get_num_bytes(self, batch: Sequence[Batch]) -> int:
        return sum(len(w.inputs) for block in batch for w in block)  # the default pickles every batch just to measure it

    def get_metrics_namespace(self) -> str:
        return f"ssga_teacher_{self.name}"


class MakeTeacherInputs(beam.DoFn):
    """``(block, {"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]})`` → the block's ``Batch[ImageWork]``,
    one per image of the regions (no inputs when it has no caption: its label sample has zero phrases),
    and on output ``dead`` a ``Batch`` of dead letters for captions of an image missing from the regions."""

    def __init__(self, images_root: str, images_dir: str = ""):
        self.images_root, self.images_dir = images_root, images_dir

    def image_path(self, url: str) -> str:
        if self.images_dir:
            return fs.join(self.images_dir, os.path.basename(url.split("?", 1)[0]))
        return url if os.path.isabs(url) or "://" in url else fs.join(self.images_root, url)

    def process(self, item):
        _, group = item
        phrases, regions = defaultdict(list), defaultdict(list)
        for pu in group["phrases"]:
            phrases[pu[0].image_id].append(pu)
        for r in group["regions"]:
            regions[r.image_id].append(r)
        work, dead = Batch(), Batch()
        for image_id in sorted(regions):
            work.append(self.image_work(image_id, phrases.get(image_id, []), regions[image_id]))
        for image_id in sorted(phrases.keys() - regions.keys()):
            dead.extend(dead_letter(STAGE, rec.caption_id, url, f"image {image_id!r} is not in the region source") for rec, url in phrases[image_id])
        if work:
            yield work
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, dead)

    def image_work(self, image_id: str, phrases: list[tuple[PhraseRecord, str]], regions: list[RegionInfo]) -> ImageWork:
        phrases = sorted(phrases, key=lambda pu: caption_sort_key(pu[0].caption_id))
        regions = sorted(regions, key=lambda r: (r.shard, r.key))
        r = regions[0]
        return ImageWork(image_id, regions, [
            TeacherInput(rec.caption_id, image_id, rec.caption, rec.phrases, r.image_w, r.image_h, r.boxes, r.classes, self.image_path(url), r.class_conf)
            for rec, url in phrases
        ])


class CheckTeacherOutput(beam.DoFn):
    """A block's ``Batch[ImageWork]`` with results → its ``Batch[TeacherRecord]`` (main), a ``Batch`` of dead
    letters naming each failure (``dead``), and per image ``(regions, [(PhraseRecord, TeacherRecord)])`` (``images``, a ``Batch``)."""

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

    def process(self, block: Batch):
        records, dead, images = Batch(), Batch(), Batch()
        for work in block:
            captions = []
            for res in work.results or []:
                out = self.check(res)
                if isinstance(out, dict):
                    dead.append(out)
                else:
                    captions.append(out)
                    records.append(out[1])
            images.append((work.regions, captions))
        if records:
            yield records
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, dead)
        if images:
            yield beam.pvalue.TaggedOutput(IMAGES, images)


class RunTeacher(beam.PTransform):
    """``(block, {"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]})`` (grouped by block of images) →
    ``records`` (``Batch[TeacherRecord]``), ``dead`` letters (``Batch`` es), and ``images``: per image of the
    regions, ``(regions, [(PhraseRecord, TeacherRecord)])`` (``Batch`` es) for match → labels, no further shuffle needed."""

    def __init__(self, handler: TeacherModelHandler, teacher_fingerprint: str, images_root: str, images_dir: str = ""):
        super().__init__()
        self.handler, self.fp = handler, teacher_fingerprint
        self.images_root, self.images_dir = images_root, images_dir

    def expand(self, by_block):
        work = by_block | "Inputs" >> beam.ParDo(MakeTeacherInputs(self.images_root, self.images_dir)).with_outputs(DEAD, main="work")
        results = work.work | "RunInference" >> RunInference(self.handler)
        checked = results | "Check" >> beam.ParDo(CheckTeacherOutput(self.fp)).with_outputs(DEAD, IMAGES, main="records")
        dead = (work[DEAD], checked[DEAD]) | "DeadLetters" >> beam.Flatten()
        return {"records": checked.records, "dead": dead, "images": checked[IMAGES]}
