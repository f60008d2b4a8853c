"""Ground-truth teacher: the Flickr30k Entities boxes of each phrase, with score 1.

A phrase takes the boxes of every markup entity its span overlaps. Captions whose text differs from
the Flickr30k sentence get no boxes (the labels then say "no teacher box", not "negative").
"""
from __future__ import annotations

from functools import lru_cache

from pipelines.formats.flickr30k import Flickr30kGroundTruth
from pipelines.teachers.base import Param, Teacher, TeacherInput
from schemas.manifest import files_digest
from schemas.records import TeacherBox


def caption_index(caption_id: str) -> int:
    k = caption_id.rpartition("#")[2]
    if not k.isdigit():
        raise ValueError(f"caption_id {caption_id!r} is not '<image_id>#<k>', cannot find its Flickr30k sentence")
    return int(k)


class GroundTruthTeacher(Teacher):
    """Shared by the oracle and the simulated teacher: reads GT boxes per caption phrase."""

    PARAMS = {"flickr30k": Param(str, required=True, help="the Flickr30k Entities directory (Sentences/, Annotations/)")}

    def __init__(self, **params):
        super().__init__(**params)
        self.root = self.values["flickr30k"]
        self.gt = Flickr30kGroundTruth(self.root)
        self._image = lru_cache(maxsize=256)(self.gt.image)

    def weights_digest(self) -> str:
        # The ground truth is this teacher's "weights": label edits must change the fingerprint.
        from ssga_io import fs

        files = fs.glob(fs.join(self.root, "Sentences", "*.txt")) + fs.glob(fs.join(self.root, "Annotations", "*.xml"))
        return files_digest(files)  # local paths and URLs alike

    def gt_boxes(self, x: TeacherInput):
        sentences, boxes = self._image(x.image_id)
        return self.gt.phrase_boxes(x.caption, caption_index(x.caption_id), [(p.start, p.end) for p in x.phrases], sentences, boxes)


class OracleTeacher(GroundTruthTeacher):
    name = "oracle"

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        out = []
        for x in batch:
            boxes = []
            for i, gt in enumerate(self.gt_boxes(x)):
                if gt is not None:
                    boxes += [TeacherBox(i, tuple(map(float, b)), 1.0) for b in gt]
            out.append(boxes)
        return out
