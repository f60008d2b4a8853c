"""The ``teacher`` stage: phrases joined with their image's regions → Beam RunInference with a teacher.

Every phrase record ends as a teacher record or a dead letter: its image is missing from the region
source, the teacher raised on it, or the teacher's answer breaks the record contract.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from pipelines import remote_io
from pipelines.captions import caption_sort_key
from pipelines.teachers import Teacher, TeacherInput, build_teacher
from schemas.manifest import dead_letter
from schemas.records import PhraseRecord, TeacherBox, TeacherRecord, teacher_problem

log = logging.getLogger(__name__)
STAGE = "teacher"
DEAD = "dead"


@dataclass
class TeacherResult:
    input: TeacherInput
    boxes: list[TeacherBox] | None
    error: str = ""


class TeacherModelHandler(ModelHandler[TeacherInput, TeacherResult, Teacher]):
    """RunInference adapter: one teacher per worker process, a batch of captions per call.

    A failing batch is retried element by element, so one bad caption costs only itself.
    """

    def __init__(self, name: str, params: dict[str, Any], min_batch_size: int = 8, max_batch_size: int = 64):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.name, self.teacher_params = name, dict(params)

    def load_model(self) -> Teacher:
        t0 = time.perf_counter()
        teacher = build_teacher(self.name, self.teacher_params).load()
        log.info("loaded teacher %s in %.1fs (pid %d)", self.name, time.perf_counter() - t0, os.getpid())
        return teacher

    def run_inference(self, batch: Sequence[TeacherInput], model: Teacher, inference_args=None) -> Iterable[TeacherResult]:
        batch = list(batch)
        try:
            return [TeacherResult(x, b) for x, b in zip(batch, model.predict(batch), strict=True)]
        except Exception:  # noqa: BLE001 - isolate the culprit below
            out = []
            for x in batch:
                try:
                    out.append(TeacherResult(x, model.predict([x])[0]))
                except Exception as e:  # noqa: BLE001 - becomes a dead letter with its reason
                    out.append(TeacherResult(x, None, f"{type(e).__name__}: {e}"))
            return out

    def get_num_bytes(self, batch: Sequence[TeacherInput]) -> int:
        return len(batch)  # the default pickles every batch just to measure it

    def get_metrics_namespace(self) -> str:
        return f"ssga_teacher_{self.name}"


class MakeTeacherInputs(beam.DoFn):
    """``(image_id, {"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]})`` → TeacherInput per caption."""

    def __init__(self, images_root: str, images_dir: str = ""):
        self.images_root, self.images_dir = images_root, images_dir

    def image_path(self, url: str) -> str:
        if self.images_dir:
            return remote_io.join(self.images_dir, os.path.basename(url.split("?", 1)[0]))
        return url if os.path.isabs(url) or "://" in url else remote_io.join(self.images_root, url)

    def process(self, item):
        image_id, group = item
        phrases = sorted(group["phrases"], key=lambda pu: caption_sort_key(pu[0].caption_id))
        regions = sorted(group["regions"], key=lambda r: (r.shard, r.key))
        if not regions:
            for rec, url in phrases:
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, rec.caption_id, url, f"image {image_id!r} is not in the region source"))
            return
        r = regions[0]
        for rec, url in phrases:
            yield TeacherInput(
                rec.caption_id, image_id, rec.caption, rec.phrases, r.image_w, r.image_h, r.boxes, r.classes, self.image_path(url), r.class_conf
            )


class CheckTeacherOutput(beam.DoFn):
    """TeacherResult → ``(PhraseRecord, TeacherRecord)``, or a dead letter naming the failure."""

    def __init__(self, teacher_fingerprint: str):
        self.fp = teacher_fingerprint

    def process(self, res: TeacherResult):
        x = res.input
        if res.boxes is None:
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, x.caption_id, x.image_path, f"teacher failed: {res.error}"))
            return
        rec = TeacherRecord(x.caption_id, x.image_id, self.fp, len(x.phrases), sorted(res.boxes, key=lambda b: (b.phrase_index, -b.score, b.box)))
        reason = teacher_problem(rec)
        if reason:
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, x.caption_id, x.image_path, f"invalid teacher output: {reason}"))
            return
        yield PhraseRecord(x.caption_id, x.image_id, x.caption, x.phrases), rec


class RunTeacher(beam.PTransform):
    """``(PhraseRecord, url)`` + ``(image_id, RegionInfo)`` → ``(PhraseRecord, TeacherRecord)`` and ``dead``."""

    def __init__(self, handler: TeacherModelHandler, teacher_fingerprint: str, regions, images_root: str, images_dir: str = ""):
        super().__init__()
        self.handler, self.fp, self.regions = handler, teacher_fingerprint, regions
        self.images_root, self.images_dir = images_root, images_dir

    def expand(self, phrases):
        keyed = phrases | "KeyByImage" >> beam.Map(lambda pu: (pu[0].image_id, pu))
        joined = (
            {"phrases": keyed, "regions": self.regions}
            | "JoinRegions" >> beam.CoGroupByKey()
            | "Inputs" >> beam.ParDo(MakeTeacherInputs(self.images_root, self.images_dir)).with_outputs(DEAD, main="inputs")
        )
        results = joined.inputs | "RunInference" >> RunInference(self.handler)
        checked = results | "Check" >> beam.ParDo(CheckTeacherOutput(self.fp)).with_outputs(DEAD, main="records")
        dead = (joined.dead, checked.dead) | "DeadLetters" >> beam.Flatten()
        return {"records": checked.records, "dead": dead}
