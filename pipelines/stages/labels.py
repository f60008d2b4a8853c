"""The ``match`` + ``labels`` stage: teacher boxes × detector regions → label shards paired with region shards.

Every image of region shard ``k`` gets a sample in ``labels-k.tar`` under the same key (zero phrases
when no caption survived), so the trainer zips the two shards key by key.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from ssga_io import fs
from pipelines.formats.captions import caption_sort_key
from pipelines.formats.flickr30k import Flickr30kGroundTruth
from pipelines.stages.stage_io import Batch, RegionInfo
from pipelines.stages.match import match_phrases
from pipelines.stages.quality import gt_alignment, quality_counts
from schemas.records import ImageLabels, PhraseRecord, TeacherRecord, labels_problem
from schemas.shards import LABEL_PREFIX, encode_labels, shard_name, write_shard

STATS = "stats"
SCORE_BINS = 10
MAX_POSITIVES_BIN = 10  # positives per phrase histogram: 0..9 and "10+"


def image_labels(
    region: RegionInfo, captions: list[tuple[PhraseRecord, TeacherRecord]], threshold: float, teacher: str
) -> ImageLabels:
    """Stack every caption's phrase × region matrices of one image, captions in caption order."""
    captions = sorted(captions, key=lambda pt: caption_sort_key(pt[0].caption_id))
    n = region.boxes.shape[0]
    aligns, ious, scores, meta = [np.zeros((0, n), np.uint8)], [np.zeros((0, n), np.float32)], [np.zeros((0, n), np.float32)], []
    for phr, tea in captions:
        a, i, s = match_phrases(tea.boxes, len(phr.phrases), region.boxes, threshold)
        aligns.append(a), ious.append(i), scores.append(s)
        meta.append({"caption_id": phr.caption_id, "text": phr.caption, "phrases": [{"text": p.text, "start": p.start, "end": p.end} for p in phr.phrases]})
    lab = ImageLabels(
        image_id=region.image_id,
        num_boxes=n,
        iou_threshold=threshold,
        captions=meta,
        align=np.concatenate(aligns),
        iou=np.concatenate(ious).astype(np.float32),
        score=np.concatenate(scores).astype(np.float16),
        teacher=teacher,
    )
    reason = labels_problem(lab)
    if reason:  # built here from validated records: a failure is a bug, not bad data
        raise AssertionError(f"image {region.image_id}: inconsistent labels: {reason}")
    return lab


class LabelStats:
    """Statistics of label samples (counters and histograms), summed over the samples added.

    Histograms are binned once over all the samples' values, not per sample: a block's statistics cost
    a few numpy calls, not a few per image (the sum is the same, bins do not depend on neighbours)."""

    COUNTERS = ("images", "images_without_captions", "captions", "phrases", "phrases_without_match", "phrase_region_pairs",
                "positive_pairs", "teacher_boxes")

    def __init__(self):
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.phrases_per_caption: dict[int, int] = {}
        self.positives: list[np.ndarray] = []  # per sample: positives per phrase
        self.scores: list[float] = []
        self.quality: dict[str, int] | None = None

    def add(self, lab: ImageLabels, teacher_records: list[TeacherRecord], quality: dict[str, int] | None = None) -> None:
        pos = lab.align.sum(axis=1, dtype=np.int64)
        c = self.counts
        c["images"] += 1
        c["images_without_captions"] += not lab.captions
        c["captions"] += len(lab.captions)
        c["phrases"] += lab.num_phrases
        c["phrases_without_match"] += int((pos == 0).sum())
        c["phrase_region_pairs"] += int(lab.align.size)
        c["positive_pairs"] += int(pos.sum())
        for cap in lab.captions:
            n = len(cap["phrases"])
            self.phrases_per_caption[n] = self.phrases_per_caption.get(n, 0) + 1
        self.positives.append(pos)
        self.scores.extend(b.score for t in teacher_records for b in t.boxes)
        if quality is not None:
            self.quality = {k: v + (self.quality or {}).get(k, 0) for k, v in quality.items()}

    def result(self) -> dict:
        """The summed statistics; ``{}`` when no sample was added."""
        if not self.counts["images"]:
            return {}
        pos = np.minimum(np.concatenate(self.positives), MAX_POSITIVES_BIN)
        hist = np.histogram(np.clip(np.asarray(self.scores, np.float64), 0, 1), bins=SCORE_BINS, range=(0.0, 1.0))[0]
        out = {
            **self.counts,
            "teacher_boxes": len(self.scores),
            "phrases_per_caption": {str(k): v for k, v in sorted(self.phrases_per_caption.items())},
            "positives_per_phrase": {str(k): int(v) for k, v in enumerate(np.bincount(pos, minlength=0)) if v},
            "teacher_score_hist": {f"{i / SCORE_BINS:.1f}": int(c) for i, c in enumerate(hist) if c},
        }
        if self.quality is not None:
            out["quality"] = self.quality
        return out


class BuildLabels(beam.DoFn):
    """A ``Batch`` of images' ``([RegionInfo], [(PhraseRecord, TeacherRecord)])`` (grouped once, upstream) →
    ``(shard, Batch[(key, members)])`` per region shard, and the batch's summed statistics (:class:`LabelStats`) on output ``stats``."""

    def __init__(self, threshold: float, teacher: str, flickr30k: str = ""):
        self.threshold, self.teacher, self.flickr30k = threshold, teacher, flickr30k

    def setup(self):
        self.gt = Flickr30kGroundTruth(self.flickr30k) if self.flickr30k else None

    def process(self, images: Batch):
        shards: dict[int, Batch] = {}
        stats = LabelStats()
        for regions, captions in images:
            for region in regions:
                lab = image_labels(region, captions, self.threshold, self.teacher)
                quality = quality_counts(lab.align, *gt_alignment(lab, region.boxes, self.gt)) if self.gt is not None else None
                stats.add(lab, [t for _, t in captions], quality)
                shards.setdefault(region.shard, Batch()).append((region.key, encode_labels(lab)))
        if stats.counts["images"]:
            yield beam.pvalue.TaggedOutput(STATS, stats.result())
        yield from sorted(shards.items())


class WriteLabelShards(beam.PTransform):
    """``(shard, Batch[(key, members)])`` → ``<dir>/labels-NNNNNN.tar`` (keys sorted by write_shard); yields sample counts."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def expand(self, samples):
        directory = self.directory

        def write(item):
            index, batches = item
            return publish_shard(fs.join(directory, shard_name(LABEL_PREFIX, index)), dict(kv for b in batches for kv in b))

        return samples | "GroupByShard" >> beam.GroupByKey() | "Write" >> beam.Map(write)


def publish_shard(path: str, samples: dict) -> int:
    """``write_shard`` at a local path or a Beam filesystem URL (streamed to a temp object, renamed into place)."""
    return write_shard(path, samples)
