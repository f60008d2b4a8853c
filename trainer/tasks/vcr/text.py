"""VCR text with object references → words tied to regions, and the (context, choice) pairs scored.

**Object references** (decision): both. Each reference becomes the object's *tag word* plus a *link*
to its region, and the single-stream encoder adds the linked region's visual input embedding to every
WordPiece token of that word (VL-BERT's VCR input; :mod:`trainer.tasks.vcr.links` carries links to
tokens and maps objects to the shard's regions by box IoU ≥ 0.5,
:func:`trainer.models.embeddings.add_linked_regions` adds them). The dual-stream encoder, or
``--no-links``, sees the tag word alone. The tag word is the class name
(``"car"``); persons get r2c's gender-neutral names (``GENDER_NEUTRAL_NAMES[i % 15]``, rowanz/r2c
``dataloaders/vcr.py`` ``_fix_tokenization``) so that two persons stay distinguishable in text.
A reference to several objects (``[1, 3]``) becomes ``"Riley and Jessie"``, each name linked to
its own object, ``"and"`` unlinked. Links index ``objects`` (the metadata boxes), ``-1`` = none.

**Pairs**: Q→A scores ``(question, answer_i)``; QA→R scores ``(question + correct answer, rationale_i)``,
the correct answer appended to the question as r2c's ``mode == 'rationale'`` does.
"""
from __future__ import annotations

from collections.abc import Sequence

from trainer.tasks.vcr.reader import Token, VCRExample, VCRError

# rowanz/r2c dataloaders/vcr.py (the list as published, "Peyton" twice included)
GENDER_NEUTRAL_NAMES = ("Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody", "Kendall",
                        "Peyton", "Skyler", "Frankie", "Pat", "Quinn")  # fmt: skip
NO_LINK = -1
MODES = ("answer", "rationale")


def tag_word(index: int, objects: Sequence[str], person_names: bool = True) -> str:
    name = objects[index]
    return GENDER_NEUTRAL_NAMES[index % len(GENDER_NEUTRAL_NAMES)] if person_names and name == "person" else name


def words_and_links(tokens: Sequence[Token], objects: Sequence[str], person_names: bool = True) -> tuple[list[str], list[int]]:
    """Token list → ``(words, links)`` of equal length; ``links[k]`` is the object index or ``-1``."""
    words: list[str] = []
    links: list[int] = []
    for tok in tokens:
        if isinstance(tok, str):
            words.append(tok)
            links.append(NO_LINK)
            continue
        for j, i in enumerate(tok):
            if j:
                words.append("and")
                links.append(NO_LINK)
            words.append(tag_word(i, objects, person_names))
            links.append(i)
    return words, links


def choice_pairs(ex: VCRExample, mode: str, person_names: bool = True) -> list[tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]]:
    """The four ``((context words, links), (choice words, links))`` of one example in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    context: tuple[Token, ...] = ex.question
    if mode == "rationale":
        if ex.answer_label is None:
            raise VCRError(f"annot_id {ex.annot_id}: QA→R needs the answer_label (the correct answer is appended to the question)")
        context = ex.question + ex.answer_choices[ex.answer_label]
    choices = ex.answer_choices if mode == "answer" else ex.rationale_choices
    ctx = words_and_links(context, ex.objects, person_names)
    return [(ctx, words_and_links(c, ex.objects, person_names)) for c in choices]


def label_of(ex: VCRExample, mode: str) -> int | None:
    return ex.answer_label if mode == "answer" else ex.rationale_label
