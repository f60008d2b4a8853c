"""The label graph's batching: records travel in ``Batch`` es and blocks of images, and the pieces that
unpack them (counts, sinks, the RunInference handler, block statistics) keep the per-record contract."""
import json
import pickle
import typing

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders import coder_impl, coders

from pipelines.stages.labels import LabelStats
from pipelines.stages.stage_io import COUNTS_NAME, Batch, RegionInfo, WriteCounts, by_block, records
from pipelines.stages.teacher import ImageWork, TeacherModelHandler
from pipelines.teachers import TeacherInput
from schemas.records import Phrase, ImageLabels, TeacherBox, TeacherRecord
from schemas.shards import shard_index


def _region(image_id: str, shard: int = 0) -> RegionInfo:
    return RegionInfo(shard, f"k{image_id}", image_id, 100, 100, np.zeros((2, 4), np.float32), None)


def test_a_batch_crosses_a_shuffle_as_one_pickle():
    """Beam's default coder walks a plain list item by item (a pickle per record); a Batch is one pickle."""
    pickled = []

    class Spy(coders.PickleCoder):  # the default fallback (PickleCoder), counting what it pickles
        def _create_impl(self):
            return coder_impl.CallbackCoderImpl(lambda x: pickled.append(type(x)) or pickle.dumps(x), pickle.loads)

    coder = coders.FastPrimitivesCoder(fallback_coder=Spy())
    batch = Batch(_region(str(i)) for i in range(50))
    back = coder.decode(coder.encode(batch))
    assert pickled == [Batch]
    assert type(back) is Batch and [r.image_id for r in back] == [r.image_id for r in batch]
    pickled.clear()
    coder.encode(list(batch))
    assert len(pickled) == 50  # what a plain list costs


def test_records_and_blocks():
    b = Batch([1, 2, 3])
    assert records(b) is b and records((7, b)) is b and records((7, "x")) == [(7, "x")] and records({"a": 1}) == [{"a": 1}]
    ids = [f"img{i}" for i in range(40)]
    blocks = by_block(ids, 4, lambda x: x)
    assert [k for k, _ in blocks] == sorted({shard_index(i, 4) for i in ids})  # the Parquet shard index: one block, one file
    assert all(type(v) is Batch and all(shard_index(i, 4) == k for i in v) for k, v in blocks)
    assert sorted(i for _, v in blocks for i in v) == sorted(ids)


def test_counts_count_records_in_batches_and_single_elements(tmp_path):
    with beam.Pipeline() as p:
        batches = p | "B" >> beam.Create([Batch([1, 2, 3]), Batch([4])])
        keyed = p | "K" >> beam.Create([(0, Batch("ab")), (1, Batch("cde"))])
        singles = p | "S" >> beam.Create([{"x": 1}, {"x": 2}])
        empty = p | "E" >> beam.Create([])
        _ = {"batches": batches, "keyed": keyed, "singles": singles, "empty": empty} | WriteCounts(str(tmp_path))
    assert json.loads((tmp_path / COUNTS_NAME).read_text()) == {"batches": 4, "empty": 0, "keyed": 5, "singles": 2}


class _Teacher:
    """Answers one box per phrase; raises on a batch holding a caption id in ``bad``. Records each call."""

    def __init__(self, bad=()):
        self.bad, self.calls = set(bad), []

    def prefetch(self, xs):
        self.calls.append(("prefetch", [x.caption_id for x in xs]))

    def predict(self, xs):
        self.calls.append([x.caption_id for x in xs])
        if self.bad & {x.caption_id for x in xs}:
            raise RuntimeError("boom")
        return [[TeacherBox(i, (0.0, 0.0, 1.0, 1.0), 0.5) for i in range(len(x.phrases))] for x in xs]


def _work(image_id: str, captions: int) -> ImageWork:
    inputs = [TeacherInput(f"{image_id}#{c}", image_id, "a dog", [Phrase("a dog", 0, 5)], 100, 100, np.zeros((2, 4), np.float32))
              for c in range(captions)]
    return ImageWork(image_id, [_region(image_id)], inputs)


def test_handler_runs_a_block_a_few_images_at_a_time_and_isolates_failures():
    block = Batch([_work("a", 2), _work("b", 0), _work("c", 1), _work("d", 1), _work("e", 2)])
    handler = TeacherModelHandler("tag_similarity", {}, images_per_batch=2)
    teacher = _Teacher(bad={"d#0"})
    (out,) = handler.run_inference([block], teacher)
    assert type(out) is Batch and [w.image_id for w in out] == ["a", "b", "c", "d", "e"]
    # images with captions, two at a time; "b" (no caption) never reaches the teacher but stays in the block.
    # Before each, the teacher hears which images come next (an image teacher decodes them meanwhile).
    assert teacher.calls[0] == ("prefetch", ["d#0", "e#0", "e#1"])
    assert teacher.calls[1] == ["a#0", "a#1", "c#0"]
    assert teacher.calls[2] == ["d#0", "e#0", "e#1"]  # fails: retried image by image, then caption by caption
    assert sum(isinstance(c, tuple) for c in teacher.calls) == 1  # nothing comes after the last images
    assert out[1].results == []
    errors = {r.input.caption_id: r.error for w in out for r in w.results}
    assert [c for c, e in errors.items() if e] == ["d#0"] and "boom" in errors["d#0"]
    assert all(r.boxes for w in out for r in w.results if r.input.caption_id != "d#0")
    assert handler.get_num_bytes([block]) == 6
    with pytest.raises(ValueError, match="images_per_batch"):
        TeacherModelHandler("tag_similarity", {}, images_per_batch=0)


def _labels(image_id: str, align: list[list[int]], phrases_per_caption: list[int]) -> ImageLabels:
    a = np.asarray(align, np.uint8).reshape(-1, 3)
    captions = [{"caption_id": f"{image_id}#{i}", "text": "t", "phrases": [{"text": "x", "start": 0, "end": 1}] * n}
                for i, n in enumerate(phrases_per_caption)]
    return ImageLabels(image_id, 3, 0.5, captions, a, a.astype(np.float32), a.astype(np.float16), "t")


def test_label_stats_sum_over_images():
    tr = [TeacherRecord("a#0", "a", "t", 1, [TeacherBox(0, (0, 0, 1, 1), s) for s in (0.05, 0.95, 1.0)])]
    stats = LabelStats()
    stats.add(_labels("a", [[1, 1, 0], [0, 0, 0], [1, 1, 1]], [2, 1]), tr, {"tp": 1, "fp": 2})
    stats.add(_labels("b", [], []), [], {"tp": 3, "fp": 0})
    stats.add(_labels("c", [[1] * 3] * 1 + [[0, 1, 0]], [2]), tr[:0] + [TeacherRecord("c#0", "c", "t", 2, [TeacherBox(1, (0, 0, 1, 1), 0.31)])])
    assert stats.result() == {
        "images": 3, "images_without_captions": 1, "captions": 3, "phrases": 5, "phrases_without_match": 1,
        "phrase_region_pairs": 15, "positive_pairs": 9, "teacher_boxes": 4,
        "phrases_per_caption": {"1": 1, "2": 2}, "positives_per_phrase": {"0": 1, "1": 1, "2": 1, "3": 2},
        "teacher_score_hist": {"0.0": 1, "0.3": 1, "0.9": 2}, "quality": {"tp": 4, "fp": 2},
    }
    assert LabelStats().result() == {}


def test_batch_aware_coder_encodes_what_beams_default_encodes_and_sizes_a_batch_from_one_record():
    """Beam samples elements at every step to estimate their size, and its default coder measures by
    encoding: a whole batch pickled just to be measured. The batch-aware coder estimates from one record."""
    from pipelines.stages.batch import BatchAwareCoder

    pickled = []

    class Spy(coders.PickleCoder):
        def _create_impl(self):
            return coder_impl.CallbackCoderImpl(lambda x: pickled.append(type(x)) or pickle.dumps(x), pickle.loads)

    batch = Batch(_region(str(i)) for i in range(50))
    default, aware = coders.FastPrimitivesCoder(fallback_coder=Spy()), BatchAwareCoder(fallback_coder=Spy())
    for value in (batch, (3, batch), (3, (1, batch)), {"regions": batch}, ("plain", [1, 2.5, None]), _region("x")):
        assert aware.encode(value) == default.encode(value)  # the same bytes at a shuffle
        back = aware.decode(aware.encode(value))
        assert type(back) is type(value)
    true_size = len(default.encode((3, batch)))
    for value in (batch, (3, batch), (3, (1, batch)), {"regions": batch}):
        pickled.clear()
        size, observables = aware.get_impl().get_estimated_size_and_observables(value)
        assert pickled == [] and observables == []  # no record went through the coder's pickle
        assert 0.9 * true_size < size < 1.1 * true_size, (value, size, true_size)
    pickled.clear()
    assert aware.get_impl().get_estimated_size_and_observables(("plain", [1, 2.5]))[0] == default.get_impl().get_estimated_size_and_observables(("plain", [1, 2.5]))[0]
    default.get_impl().get_estimated_size_and_observables(batch)
    assert pickled == [Batch]  # what Beam's default does: the whole batch, to measure it


def test_use_batch_aware_coder_makes_it_the_coder_of_untyped_collections_once():
    from apache_beam.coders import typecoders

    from pipelines.stages.batch import BatchAwareCoder, use_batch_aware_coder

    use_batch_aware_coder()
    use_batch_aware_coder()
    assert isinstance(typecoders.registry.get_coder(typing.Any), BatchAwareCoder)
    assert sum(c is BatchAwareCoder for c in typecoders.registry._fallback_coder._coders) == 1  # registered once


@pytest.mark.slow
def test_a_model_shared_across_processes_takes_the_prefetch_hint(tmp_path):
    """With share_model (Beam's large_model: one copy per machine, reached through a proxy) the handler's
    prefetch hints go through the proxy too; the tiny Grounding DINO on the CPU, two worker processes."""
    import json

    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from bench.bench_teachers import make_inputs
    from hf_tiny import save_tiny_grounding_dino

    md = str(save_tiny_grounding_dino(tmp_path / "gd"))
    xs = make_inputs(tmp_path / "corpus", 4, None)
    groups: dict[str, list] = {}
    for x in xs:
        groups.setdefault(x.image_id, []).append(x)
    handler = TeacherModelHandler("grounding_dino", {"model_dir": md, "device": "cpu", "box_threshold": "0"}, images_per_batch=1, share_model=True)
    out = tmp_path / "out.jsonl"
    opts = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with beam.Pipeline(options=opts) as p:
        blocks = [Batch(ImageWork(k, [], v) for k, v in sorted(groups.items())[i::2]) for i in range(2)]  # 2 images a block
        _ = (p | beam.Create(blocks) | RunInference(handler) | beam.FlatMap(lambda b: [r for w in b for r in w.results])
             | beam.Map(lambda r: json.dumps({"boxes": None if r.boxes is None else len(r.boxes), "error": r.error}))
             | beam.io.WriteToText(str(out), shard_name_template=""))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert handler.share_model_across_processes() and len(rows) == len(xs)
    assert [r for r in rows if r["error"] or r["boxes"] is None] == [] and sum(r["boxes"] for r in rows) > 0
