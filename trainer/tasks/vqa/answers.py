"""The VQA evaluation's answer processing and per-question accuracy, as the official code computes them.

Ported in behaviour from GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``
(``VQAEval.evaluate``, ``processPunctuation``, ``processDigitArticle``; the Python 3 master version).
What the official evaluation does, quirks included, and so what this module does:

* The **prediction** is normalised always: ``\\n``/``\\t`` → space, strip, punctuation, then lower case,
  number words → digits (``none``/``zero`` → ``0`` … ``ten`` → ``10``), articles dropped, contractions
  restored (``dont`` → ``don't``).
* The **ground-truth answers** get the punctuation step only, and only when the ten answers are not
  all identical (annotations were normalised at collection time). So a prediction ``"t-shirt"``
  (→ ``"t shirt"``) scores 0 against ten identical ``"t-shirt"``, but matches when they disagree.
* Punctuation: a mark is deleted when it touches a space anywhere in the text, or when the text
  holds a ``digit,digit`` anywhere (then *every* mark is deleted); otherwise it becomes a space.
  ``'`` and ``:`` are not punctuation here. The period rule is ``(?!<=\\d)(\\.)(?!\\d)`` (a typo for a
  look-behind): it deletes every period not followed by a digit (``"3."`` → ``"3"``, ``"3.5"`` kept,
  ``".5"`` kept), at most 32 of them (``re.UNICODE`` is passed as ``count``).
* Accuracy of a prediction = mean over the ten leave-one-out subsets of ``min(1, matches / 3)``,
  matches counted by exact string equality with the (processed) ground truth.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've",
    "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've",
    "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip  (keys with capitals, e.g. "Im", never match: words are lower-cased first, as officially)
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern, typo and all
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PERIOD_STRIP_COUNT = int(re.UNICODE)  # the official call passes re.UNICODE (32) as sub()'s count
MATCHES_FOR_FULL_CREDIT = 3


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: conditions are tested on the input, edits made in turn."""
    strip_all = COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCTUATION:
        out = out.replace(p, "") if strip_all or p + " " in text or " " + p in text else out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower case, number words → digits, no articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """What the official evaluation compares for a prediction (also the form answer vocabularies use)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def ground_truth_forms(answers: Sequence[str]) -> list[str]:
    """The ground-truth answers as the official evaluation compares them: punctuation-processed only
    when they are not all identical, otherwise untouched."""
    return [process_punctuation(a) for a in answers] if len(set(answers)) > 1 else list(answers)


def leave_one_out_score(forms: Sequence[str], candidate: str) -> float:
    """Mean over the leave-one-out subsets of ``min(1, matches/3)`` for an already-normalised
    ``candidate`` against already-processed ``forms`` (same float operations as the official loop)."""
    if not forms:
        raise ValueError("no ground-truth answers to score against")
    matches = sum(f == candidate for f in forms)
    return float(sum(min(1, float(matches - (f == candidate)) / MATCHES_FOR_FULL_CREDIT) for f in forms)) / len(forms)


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy (0..1) of one predicted answer string against the question's ground-truth answers."""
    return leave_one_out_score(ground_truth_forms(answers), normalize_answer(prediction))
