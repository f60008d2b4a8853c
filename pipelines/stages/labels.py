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
from pipelines.stages.stage_io import Batch, RegionInfo, merge_stats
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


def image_stats(lab: ImageLabels, teacher_records: list[TeacherRecord]) -> dict:
    pos = lab.align.sum(axis=1) if lab.num_phrases else np.zeros(0, int)
    scores = np.asarray([b.score for t in teacher_records for b in t.boxes], np.float64)
    hist = np.histogram(np.clip(scores, 0, 1), bins=SCORE_BINS, range=(0.0, 1.0))[0]
    return {
        "images": 1,
        "images_without_captions": int(not lab.captions),
        "captions": len(lab.captions),
        "phrases": lab.num_phrases,
        "phrases_without_match": int((pos == 0).sum()),
        "phrase_region_pairs": int(lab.align.size),
        "positive_pairs": int(lab.align.sum()),
        "teacher_boxes": int(scores.size),
        "phrases_per_caption": _hist([len(c["phrases"]) for c in lab.captions]),
        "positives_per_phrase": _hist([min(int(v), MAX_POSITIVES_BIN) for v in pos]),
        "teacher_score_hist": {f"{i / SCORE_BINS:.1f}": int(c) for i, c in enumerate(hist) if c},
    }


def _hist(values: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


class BuildLabels(beam.DoFn):
    """A ``Batch`` of images' ``([RegionInfo], [(PhraseRecord, TeacherRecord)])`` (grouped once, upstream) →
    ``(shard, Batch[(key, members)])`` per region shard, and the batch's summed statistics on output ``stats``."""

    def __init__(self, threshold: float, teacher: str, flickr30k: str = ""):
        self.threshold, self.teacher, self.flickr30k = threshold, teacher, flickr30k

    def setup(self):
        self.gt = Flickr30kGroundTruth(self.flickr30k) if self.flickr30k else None

    def process(self, images: Batch):
        shards: dict[int, Batch] = {}
        total: dict = {}
        for regions, captions in images:
            for region in regions:
                lab = image_labels(region, captions, self.threshold, self.teacher)
                stats = image_stats(lab, [t for _, t in captions])
                if self.gt is not None:
                    stats["quality"] = quality_counts(lab.align, *gt_alignment(lab, region.boxes, self.gt))
                total = merge_stats(total, stats)
                shards.setdefault(region.shard, Batch()).append((region.key, encode_labels(lab)))
        if total:
            yield beam.pvalue.TaggedOutput(STATS, total)
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
