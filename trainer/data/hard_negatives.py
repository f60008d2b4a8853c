"""Same-image ITM hard negatives: one attribute, object or relation of a caption changed to one the image does not show.

A whole-caption swap names objects, colours and shapes that are not in the image, so the ITM head
learns it within a few hundred steps and then stops teaching anything. A hard negative keeps the
image and the caption and changes one thing:

- **attribute**: a colour or size word (the lexicons below) → another of its category;
- **object**: the head noun of a noun phrase (the last word of a phrase span the label shards
  carry) → the head noun of another image's phrase;
- **relation**: a spatial relation (the lexicon below) → its converse ("to the left of" →
  "to the right of"), which contradicts the caption itself whatever else the image holds.

*Not in the image* is known from the image's own captions, for any corpus: an attribute or object
replacement must not occur as a word in any caption of this image. Region class distributions are
no help here: the shards carry the detector's probabilities over an unnamed class list
(``objects_vocab.txt`` lives with the corpus, not in the shards), so a class cannot be matched to a
word. Captions describe part of an image, so a caption-absent word can still be present: this
is the approximation every caption-based hard-negative recipe makes; colour and size edits keep the
noun and object edits keep the attributes, so an edit is only wrong when the image holds exactly
the changed combination.

Every replacement is drawn from the words of *other* images' captions in the shuffle buffer
(the lexicons only say which category a word is in), so a negative never contains a word the
corpus does not use: otherwise "an unseen word" would be a shortcut to the label. For the same
reason the article before the edit is made to agree ("a red" → "an orange") and a noun replaces
a noun of the same (naive) number. All draws come from the generator the caller passes, seeded by
the example's key.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

COLOURS = frozenset({
    "red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white", "grey", "gray",
    "silver", "gold", "beige", "tan", "teal", "cyan", "magenta", "violet", "navy", "maroon",
})
SIZES = frozenset({"small", "medium", "large", "big", "little", "tiny", "huge", "giant", "tall", "short", "long"})
# Converse pairs: "A r B" and "A converse(r) B" cannot both hold for the same A and B.
_CONVERSE_PAIRS = (
    ("to the left of", "to the right of"), ("on the left of", "on the right of"), ("left of", "right of"),
    ("above", "below"), ("on top of", "underneath"), ("in front of", "behind"), ("inside", "outside"),
)
RELATIONS: dict[str, str] = {a: b for a, b in _CONVERSE_PAIRS} | {b: a for a, b in _CONVERSE_PAIRS}
KINDS = ("attribute", "object", "relation")
_ARTICLES = frozenset({"a", "an", "the"})

_WORD = re.compile(r"[A-Za-z]+")
# Longest first, so "to the left of" wins over "left of"; whole words only.
_RELATION_RE = re.compile(r"\b(" + "|".join(re.escape(r) for r in sorted(RELATIONS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Edit:
    """One change to a caption: ``text[start:end]`` (``old``) became ``new``."""

    kind: str  # "attribute" | "object" | "relation"
    start: int
    end: int
    old: str
    new: str


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def head_noun(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Character span of a phrase's head noun: its last word (English noun phrases are head-final),
    or None when that word is a colour/size word (a phrase like "the red" has no noun to change)."""
    last = None
    for m in _WORD.finditer(text, start, end):
        last = m
    if last is None or last.group().lower() in COLOURS | SIZES:
        return None
    return last.start(), last.end()


def _plural(word: str) -> bool:
    return word.endswith("s") and not word.endswith("ss")


class BufferVocab:
    """Word, head-noun and relation counts over the captions in a shuffle buffer (add/remove as it changes)."""

    def __init__(self) -> None:
        self.words: Counter[str] = Counter()
        self.nouns: Counter[str] = Counter()
        self.relations: Counter[str] = Counter()

    @staticmethod
    def _parts(text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[str], list[str], list[str]]:
        nouns = [text[h[0]:h[1]].lower() for s, e in spans if (h := head_noun(text, s, e))]
        return words(text), nouns, [m.group().lower() for m in _RELATION_RE.finditer(text)]

    def add(self, text: str, spans: Sequence[tuple[int, int]]) -> None:
        for counter, items in zip((self.words, self.nouns, self.relations), self._parts(text, spans)):
            counter.update(items)

    def remove(self, text: str, spans: Sequence[tuple[int, int]]) -> None:
        for counter, items in zip((self.words, self.nouns, self.relations), self._parts(text, spans)):
            counter.subtract(items)
            for w in set(items):
                if counter[w] <= 0:
                    del counter[w]


def _sites(text: str, spans: Sequence[tuple[int, int]]) -> dict[str, list[tuple[int, int, str]]]:
    """Where each kind of edit could go: (start, end, category)."""
    out: dict[str, list[tuple[int, int, str]]] = {k: [] for k in KINDS}
    for m in _WORD.finditer(text):
        w = m.group().lower()
        if w in COLOURS or w in SIZES:
            out["attribute"].append((m.start(), m.end(), "colour" if w in COLOURS else "size"))
    for s, e in spans:
        h = head_noun(text, s, e)
        if h:
            out["object"].append((h[0], h[1], "noun"))
    # "a blue circle to the left of a blue circle" stays true under the converse: no relation edit
    # when two of the caption's phrases read the same (articles aside).
    described = [" ".join(w for w in words(text[s:e]) if w not in _ARTICLES) for s, e in spans]
    if len(set(described)) == len(described):
        for m in _RELATION_RE.finditer(text):
            out["relation"].append((m.start(), m.end(), "relation"))
    return out


def _choices(category: str, old: str, image_words: frozenset[str], vocab: BufferVocab) -> list[str]:
    """Sorted replacements for ``old`` (so the draw does not depend on the buffer's order)."""
    if category == "relation":
        converse = RELATIONS[old.lower()]
        return [converse] if vocab.relations[converse] > 0 else []
    if category == "noun":
        pool = {w for w in vocab.nouns if w not in COLOURS and w not in SIZES and _plural(w) == _plural(old.lower())}
    else:
        pool = {w for w in vocab.words if w in (COLOURS if category == "colour" else SIZES)}
    return sorted(pool - image_words - {old.lower()})


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def replace(text: str, spans: Sequence[tuple[int, int]], start: int, end: int, new: str) -> tuple[str, list[tuple[int, int]]]:
    """``text[start:end] = new``, fixing an indefinite article right before it, and every span shifted to match.

    A span that holds the edit grows or shrinks with it; spans after it move; spans before it stay.
    """
    m = re.search(r"\b(an?)(\s+)$", text[:start], re.IGNORECASE)
    if m:
        article = "an" if new[:1].lower() in "aeiou" else "a"
        new = _match_case(article, m.group(1)) + m.group(2) + new
        start = m.start(1)
    delta = len(new) - (end - start)
    out = []
    for s, e in spans:
        s2 = s if s <= start else s + delta
        e2 = e if e <= start else e + delta
        out.append((s2, max(e2, s2)))
    return text[:start] + new + text[end:], out


def hard_negative(
    text: str, spans: Sequence[tuple[int, int]], image_texts: Iterable[str], vocab: BufferVocab, rng: np.random.Generator
) -> tuple[str, list[tuple[int, int]], Edit] | None:
    """The caption with one attribute, object or relation changed, its spans, and the edit; None when no edit is possible.

    The kind is drawn uniformly among the kinds this caption allows (a caption has one relation but
    several attributes, and each kind should be learnt), then the site, then the replacement.
    """
    image_words = frozenset(w for t in image_texts for w in words(t))
    options: dict[str, list[tuple[int, int, list[str]]]] = {}
    for kind, sites in _sites(text, spans).items():
        usable = [(s, e, c) for s, e, cat in sites if (c := _choices(cat, text[s:e], image_words, vocab))]
        if usable:
            options[kind] = usable
    if not options:
        return None
    kinds = sorted(options)
    kind = kinds[int(rng.integers(len(kinds)))]
    start, end, choices = options[kind][int(rng.integers(len(options[kind])))]
    old = text[start:end]
    new = _match_case(choices[int(rng.integers(len(choices)))], old)
    new_text, new_spans = replace(text, spans, start, end, new)
    return new_text, new_spans, Edit(kind, start, end, old, new)
