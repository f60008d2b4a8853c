"""The retrieval stage's Beam side: tag sentences, embeddings, top-K search, shards.

Each DoFn does one thing; each record ends in an output or on the ``dead`` output with its reason:

    region shards ─ReadRegions─▶ (image_id, RegionInfo) ─MakeTagQuery─▶ TagQuery ─EmbedTexts─┐
    sentences file ─ReadSentences─▶ (line, text) ─EmbedTexts─▶ ToList ─▶ corpus (side input) ├─RetrieveTopK─▶ AddPhrases ─▶ WriteRetrievalShards
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
import numpy as np

from pipelines.retrieval.index import SentenceIndex
from pipelines.retrieval.shards import RETRIEVAL_PREFIX, Retrieved, encode_retrieved
from pipelines.retrieval.tags import tag_sentence
from pipelines.stages.labels import publish_shard
from pipelines.stages.stage_io import RegionInfo
from schemas.manifest import dead_letter
from schemas.shards import shard_name
from ssga_io import fs

log = logging.getLogger("pipelines.retrieval")
STAGE = "retrieval"
DEAD = "dead"


@dataclass
class TagQuery:
    """An image's query: where its sample goes (region shard and key) and its tag sentence."""

    image_id: str
    shard: int
    key: str
    tags: list[str]
    region_tag: np.ndarray | None = None  # int16 [N]: each region's index in ``tags`` (-1: its class is no tag)

    @property
    def text(self) -> str:
        return " ".join(self.tags)


@dataclass
class Sentence:
    line: int  # 1-based line number in the sentences file: the sentence's id
    text: str

    @property
    def key(self) -> str:
        return f"line {self.line}"


# ---------------------------------------------------------------------------------------------
# Reading


def read_sentences(path: str) -> Iterator[tuple[str, Any]]:
    """A sentences file (UTF-8, one sentence per line) → ``("sentence", Sentence)`` per non-blank line,
    ``("dead", dead letter)`` for a line that is not UTF-8, ``("blank", line)`` for a blank one."""
    lines = fs.read_bytes(path).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the empty remainder after a final newline is no line
    for no, raw in enumerate(lines, start=1):
        raw = raw.rstrip(b"\r")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield DEAD, dead_letter(STAGE, f"line {no}", f"{path}:{no}", f"not UTF-8 text: {e.reason} at byte {e.start}")
            continue
        yield ("sentence", Sentence(no, text)) if text else ("blank", no)


class ReadSentences(beam.PTransform):
    """Sentences file → ``Sentence`` (main) and dead letters (``dead``); blank lines are no records."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, p):
        def route(item):
            tag, value = item
            if tag == "sentence":
                yield value
            elif tag == DEAD:
                yield beam.pvalue.TaggedOutput(DEAD, value)

        rows = p | "File" >> beam.Create([self.path]) | "Lines" >> beam.FlatMap(read_sentences)
        parts = rows | "Route" >> beam.FlatMap(route).with_outputs(DEAD, main="sentences")
        return {"sentences": parts.sentences | "Spread" >> beam.Reshuffle(), "dead": parts[DEAD]}


# ---------------------------------------------------------------------------------------------
# DoFns


class MakeTagQuery(beam.DoFn):
    """``(image_id, RegionInfo)`` → ``TagQuery``, or a dead letter when the image has no usable tag."""

    def __init__(self, objects_vocab: str, max_regions: int, min_conf: float):
        self.objects_vocab, self.max_regions, self.min_conf = objects_vocab, max_regions, min_conf

    def setup(self):
        from pipelines.teachers.tag_similarity import read_objects_vocab

        self.class_names = read_objects_vocab(self.objects_vocab)

    def process(self, item: tuple[str, RegionInfo]):
        image_id, r = item
        source = f"{shard_name('regions', r.shard)}:{r.key}"
        if r.classes is None:
            reason = "the region source has no class distribution (cls_prob/objects); tags need the detector's classes"
        elif len(r.classes) == 0:
            reason = "the image has no regions"
        else:
            try:
                tags = tag_sentence(r.classes, r.class_conf, self.class_names, self.max_regions, self.min_conf)
            except ValueError as e:
                tags, reason = [], f"{e} ({self.objects_vocab})"
            else:
                reason = "" if tags else f"no region has class confidence >= {self.min_conf}"
            if not reason:
                index = {t: i for i, t in enumerate(tags)}
                region_tag = np.asarray([index.get(self.class_names[c - 1], -1) for c in r.classes], np.int16)
                yield TagQuery(image_id, r.shard, r.key, tags, region_tag)
                return
        yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, image_id, source, reason))


class EmbedTexts(beam.DoFn):
    """``x`` (with ``.text``) → ``(x, embedding float32 [E])`` with all-MiniLM-L6-v2.

    Each text is embedded alone (no padding), so its embedding does not depend on its batch — the
    outputs are the same whatever the worker count — and repeated texts are embedded once per worker.
    """

    def __init__(self, model_dir: str, torch_threads: int = 1):
        self.model_dir, self.torch_threads = model_dir, torch_threads

    def setup(self):
        import torch

        from pipelines.teachers.tag_similarity import SentenceEncoder

        torch.set_num_threads(self.torch_threads)
        self.encoder = SentenceEncoder(self.model_dir)
        self.cache: dict[str, np.ndarray] = {}

    def process(self, x):
        if x.text not in self.cache:
            self.cache[x.text] = self.encoder.encode([x.text])[0].astype(np.float32)
        yield x, self.cache[x.text]


def corpus_matrix(embedded: list[tuple[Sentence, np.ndarray]]) -> dict[str, Any]:
    """All embedded sentences, in line order: ``{"ids": [S], "emb": [S, E], "texts": [S]}``."""
    embedded = sorted(embedded, key=lambda se: se[0].line)
    dim = embedded[0][1].shape[0] if embedded else 0
    return {
        "ids": np.asarray([s.line for s, _ in embedded], np.int64),
        "emb": np.stack([e for _, e in embedded]).astype(np.float32) if embedded else np.zeros((0, dim), np.float32),
        "texts": [s.text for s, _ in embedded],
    }


class RetrieveTopK(beam.DoFn):
    """``(TagQuery, embedding)`` + the corpus (side input) → ``(shard, (key, members))``.

    The index is built once per worker per corpus (the side input is the same object for the whole
    run on a worker), exact or FAISS IVF as :class:`SentenceIndex` decides.
    """

    def __init__(self, top_k: int, kind: str, nlist: int = 0, nprobe: int = 16):
        self.top_k, self.kind, self.nlist, self.nprobe = top_k, kind, nlist, nprobe
        self._built: tuple[Any, SentenceIndex, dict[int, str]] | None = None

    def _index_of(self, corpus: dict[str, Any]) -> tuple[SentenceIndex, dict[int, str]]:
        if self._built is None or self._built[0] is not corpus:
            index = SentenceIndex(corpus["emb"], corpus["ids"], self.kind, self.nlist, self.nprobe)
            self._built = (corpus, index, {int(i): t for i, t in zip(corpus["ids"], corpus["texts"])})
        return self._built[1], self._built[2]

    def process(self, item: tuple[TagQuery, np.ndarray], corpus: dict[str, Any]):
        q, emb = item
        index, text_of = self._index_of(corpus)
        ids, sims = index.search(emb, self.top_k)
        texts = [text_of[int(i)] for i in ids]
        yield q, Retrieved(q.image_id, q.tags, ids, sims.astype(np.float32), texts)


class AddPhrases(beam.DoFn):
    """``(TagQuery, Retrieved)`` → ``(shard, (key, members))`` with what μ-VLA's region–phrase objective
    needs: the spaCy noun phrases of each retrieved sentence (the label pipeline's extractor and
    filters), their MiniLM embeddings, each tag's embedding and each region's tag index.

    Texts are embedded one at a time and cached per worker, so the output does not depend on the
    worker count or on which images share a worker.
    """

    def __init__(self, model_dir: str, spacy_model: str = "", torch_threads: int = 1):
        self.model_dir, self.spacy_model, self.torch_threads = model_dir, spacy_model, torch_threads

    def setup(self):
        import torch

        from pipelines.stages.phrases import PhraseConfig, PhraseExtractor
        from pipelines.teachers.tag_similarity import SentenceEncoder

        torch.set_num_threads(self.torch_threads)
        self.encoder = SentenceEncoder(self.model_dir)
        self.extractor = PhraseExtractor(PhraseConfig(spacy_model=self.spacy_model) if self.spacy_model else PhraseConfig()).load()
        self.emb: dict[str, np.ndarray] = {}
        self.phr: dict[str, list[list[int]]] = {}

    def _embed(self, text: str) -> np.ndarray:
        if text not in self.emb:
            self.emb[text] = self.encoder.encode([text])[0].astype(np.float32)
        return self.emb[text]

    def _phrases(self, text: str) -> list[list[int]]:
        if text not in self.phr:
            self.phr[text] = [[p.start, p.end] for p in self.extractor.extract([text])[0]]
        return self.phr[text]

    def process(self, item: tuple[TagQuery, Retrieved]):
        q, r = item
        r.phrases = [self._phrases(t) for t in r.texts]
        spans = [t[a:b] for t, ps in zip(r.texts, r.phrases) for a, b in ps]
        dim = self._embed(q.tags[0]).shape[0]
        r.phrase_emb = np.stack([self._embed(s) for s in spans]).astype(np.float16) if spans else np.zeros((0, dim), np.float16)
        r.tag_emb = np.stack([self._embed(t) for t in q.tags]).astype(np.float16)
        r.region_tag = q.region_tag
        yield q.shard, (q.key, encode_retrieved(r))


# ---------------------------------------------------------------------------------------------
# Composite transforms


class TagQueries(beam.PTransform):
    """``(image_id, RegionInfo)`` → ``(TagQuery, embedding)`` (main) and dead letters (``dead``)."""

    def __init__(self, objects_vocab: str, max_regions: int, min_conf: float, model_dir: str):
        super().__init__()
        self.objects_vocab, self.max_regions, self.min_conf, self.model_dir = objects_vocab, max_regions, min_conf, model_dir

    def expand(self, regions):
        q = regions | "Tags" >> beam.ParDo(MakeTagQuery(self.objects_vocab, self.max_regions, self.min_conf)).with_outputs(DEAD, main="queries")
        return {"queries": q.queries | "Embed" >> beam.ParDo(EmbedTexts(self.model_dir)), "dead": q[DEAD]}


class SentenceCorpus(beam.PTransform):
    """Sentences file → the embedded corpus as one element (for a side input), plus the
    per-sentence elements (``embedded``, for counting) and dead letters (``dead``)."""

    def __init__(self, path: str, model_dir: str):
        super().__init__()
        self.path, self.model_dir = path, model_dir

    def expand(self, p):
        read = p | "Read" >> ReadSentences(self.path)
        embedded = read["sentences"] | "Embed" >> beam.ParDo(EmbedTexts(self.model_dir))
        corpus = embedded | "All" >> beam.combiners.ToList() | "Matrix" >> beam.Map(corpus_matrix)
        return {"corpus": corpus, "embedded": embedded, "dead": read["dead"], "records": read["sentences"]}


class WriteRetrievalShards(beam.PTransform):
    """``(shard, (key, members))`` → ``retrieval-NNNNNN.tar`` for every shard index (empty ones too);
    yields ``(shard, samples)``."""

    def __init__(self, directory: str, num_shards: int):
        super().__init__()
        self.directory, self.num_shards = directory, num_shards

    def expand(self, samples):
        directory = self.directory

        def write(item):
            index, members = item
            members = [m for m in members if m is not None]
            return index, publish_shard(fs.join(directory, shard_name(RETRIEVAL_PREFIX, index)), dict(members))

        every = samples.pipeline | "EveryShardIndex" >> beam.Create([(k, None) for k in range(self.num_shards)])
        return (samples, every) | "Merge" >> beam.Flatten() | "GroupByShard" >> beam.GroupByKey() | "Write" >> beam.Map(write)
