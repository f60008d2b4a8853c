"""The VQA metric and answer normalisation against a port of the official evaluation code.

``OfficialVQAEval`` below is GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``
(master, commit c4e6a0e4e84b9702d99800d3393652d92b5df224): ``evaluate``, ``processPunctuation``,
``processDigitArticle``, ``setAccuracy`` and the constant tables, ported line for line (tabs to spaces,
the VQA/VQAres helper objects replaced by the ``gts``/``res`` dicts they index, progress printing
dropped; ``count=re.UNICODE`` written as a keyword, the same call). Test helper only: the code under
test is ``trainer/tasks/vqa/answers.py`` and ``metric.py``.
"""
from __future__ import annotations

import copy
import random
import re

import pytest

from trainer.tasks.vqa.answers import (
    normalize_answer, process_digit_article, process_punctuation, question_accuracy, leave_one_out_score,
)
from trainer.tasks.vqa.metric import evaluate, evaluate_file, read_predictions, write_predictions
from trainer.tasks.vqa.reader import VQAError, VQAExample


class OfficialVQAEval:
    def __init__(self, gts, res, n=2):
        self.n = n
        self.accuracy = {}
        self.evalQA = {}
        self.gts_all = gts
        self.res_all = res
        self.params = {"question_id": list(gts)}
        self.contractions = {"aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
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
                             "youll": "you'll", "youre": "you're", "youve": "you've"}  # fmt: skip
        self.manualMap = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                          "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
        self.articles = ["a", "an", "the"]
        self.periodStrip = re.compile("(?!<=\\d)(\\.)(?!\\d)")
        self.commaStrip = re.compile("(\\d)(\\,)(\\d)")
        self.punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]

    def evaluate(self, quesIds=None):
        if quesIds is None:
            quesIds = [quesId for quesId in self.params["question_id"]]
        gts = {}
        res = {}
        for quesId in quesIds:
            gts[quesId] = self.gts_all[quesId]
            res[quesId] = self.res_all[quesId]
        accQA = []
        accQuesType = {}
        accAnsType = {}
        for quesId in quesIds:
            resAns = res[quesId]["answer"]
            resAns = resAns.replace("\n", " ")
            resAns = resAns.replace("\t", " ")
            resAns = resAns.strip()
            resAns = self.processPunctuation(resAns)
            resAns = self.processDigitArticle(resAns)
            gtAcc = []
            gtAnswers = [ans["answer"] for ans in gts[quesId]["answers"]]
            if len(set(gtAnswers)) > 1:
                for ansDic in gts[quesId]["answers"]:
                    ansDic["answer"] = self.processPunctuation(ansDic["answer"])
            for gtAnsDatum in gts[quesId]["answers"]:
                otherGTAns = [item for item in gts[quesId]["answers"] if item != gtAnsDatum]
                matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
                acc = min(1, float(len(matchingAns)) / 3)
                gtAcc.append(acc)
            quesType = gts[quesId]["question_type"]
            ansType = gts[quesId]["answer_type"]
            avgGTAcc = float(sum(gtAcc)) / len(gtAcc)
            accQA.append(avgGTAcc)
            if quesType not in accQuesType:
                accQuesType[quesType] = []
            accQuesType[quesType].append(avgGTAcc)
            if ansType not in accAnsType:
                accAnsType[ansType] = []
            accAnsType[ansType].append(avgGTAcc)
            self.evalQA[quesId] = avgGTAcc  # setEvalQA stores round(100*acc, n); kept unrounded to compare exactly
        self.setAccuracy(accQA, accQuesType, accAnsType)

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) != None):  # noqa: E711
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("", outText, count=re.UNICODE)
        return outText

    def processDigitArticle(self, inText):
        outText = []
        tempText = inText.lower().split()
        for word in tempText:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
            else:
                pass
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        outText = " ".join(outText)
        return outText

    def setAccuracy(self, accQA, accQuesType, accAnsType):
        self.accuracy["overall"] = round(100 * float(sum(accQA)) / len(accQA), self.n)
        self.accuracy["perQuestionType"] = {quesType: round(100 * float(sum(accQuesType[quesType])) / len(accQuesType[quesType]), self.n) for quesType in accQuesType}
        self.accuracy["perAnswerType"] = {ansType: round(100 * float(sum(accAnsType[ansType])) / len(accAnsType[ansType]), self.n) for ansType in accAnsType}


# ---------------------------------------------------------------------------------------------
def ex(qid: int, answers: list[str], answer_type: str = "other", question_type: str = "what") -> VQAExample:
    return VQAExample(qid, qid // 1000, f"question {qid}?", question_type, answer_type, answers[0], tuple(answers), ("yes",) * len(answers))


def official(examples: list[VQAExample], predictions: dict[int, str]) -> OfficialVQAEval:
    gts = {
        e.question_id: {
            "question_type": e.question_type, "answer_type": e.answer_type,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(e.answers)],
        }
        for e in examples
    }
    ev = OfficialVQAEval(copy.deepcopy(gts), {q: {"answer": a} for q, a in predictions.items()})
    ev.evaluate()
    return ev


# Hand-computed: (prediction, ten ground-truth answers, accuracy by hand).
HAND = [
    ("yes", ["yes"] * 10, 1.0),
    ("no", ["yes"] * 10, 0.0),
    ("2", ["2"] * 3 + ["3"] * 7, 0.9),  # 3 held out: 2/3 each; 7 held out: 3 matches → 1; (3·2/3 + 7)/10
    ("Two", ["2"] * 3 + ["3"] * 7, 0.9),  # number word → digit, case folded
    ("two", ["2"] * 1 + ["3"] * 9, 0.3),  # 1 match: 9 of the 10 subsets keep it → 9·(1/3)/10
    ("3", ["2"] * 2 + ["3"] * 8, 1.0),
    ("2", ["2"] * 2 + ["3"] * 8, 0.6),  # (2·1/3 + 8·2/3)/10
    ("2", ["2"] * 4 + ["3"] * 6, 1.0),  # (4·1 + 6·1)/10
    ("none", ["0"] * 10, 1.0),  # "none" → "0"
    ("A dog.", ["dog"] * 10, 1.0),  # article dropped, final period stripped
    ("the", ["the"] * 10, 0.0),  # normalises to "" (articles dropped); identical ground truth is not
    ("t-shirt", ["t-shirt"] * 10, 0.0),  # quirk: identical GT untouched, prediction → "t shirt"
    ("t-shirt", ["t-shirt"] * 9 + ["shirt"], 1.0),  # GT disagree → processed to "t shirt" too
    ("T-Shirt", ["t-shirt"] * 9 + ["shirt"], 1.0),
    ("1,000", ["1000"] * 10, 1.0),  # digit,digit: the comma (all punctuation) deleted
    ("1,000", ["1,000"] * 10, 0.0),  # quirk: identical GT keeps its comma
    ("1,000", ["1,000"] * 5 + ["1000"] * 5, 1.0),
    ("red,white", ["red white"] * 10, 1.0),  # no digit comma, no space: comma → space
    ("red, white", ["red white"] * 10, 1.0),  # ", " touches a space: deleted
    ("3.", ["3"] * 10, 1.0),  # period not followed by a digit: stripped
    ("3.5", ["3.5"] * 10, 1.0),  # decimal point kept
    ("3.5", ["35"] * 10, 0.0),
    ("dont", ["don't"] * 10, 1.0),  # contraction restored
    ("Im", ["im"] * 10, 1.0),  # quirk: "Im" key is capitalised, words are lower-cased first
    ("man's", ["man's"] * 10, 1.0),  # apostrophe is not punctuation here
    ("12:30", ["12:30"] * 10, 1.0),  # nor the colon
    ("  yes\n", ["yes"] * 10, 1.0),
    ("yes!", ["yes"] * 7 + ["yes!"] * 3, 1.0),  # GT disagree: "yes!" → "yes " ≠ "yes"
    ("yes", ["yes"] * 7 + ["yes!"] * 3, 1.0),
    ("2", ["two"] * 10, 0.0),  # ground truth never gets digit/article processing
]


@pytest.mark.parametrize("pred,gt,expected", HAND)
def test_question_accuracy_hand_computed_and_official(pred, gt, expected):
    assert question_accuracy(pred, gt) == pytest.approx(expected, abs=1e-12)
    ref = official([ex(1000, gt)], {1000: pred})
    assert question_accuracy(pred, gt) == ref.evalQA[1000]  # bit-identical to the official loop


def test_yes_bang_quirk_is_what_official_does():
    # "yes!" alone in a disagreeing GT becomes "yes " (replaced by a space, not stripped): it never
    # matches "yes"; so 7 matches of "yes" → 1.0, and predicting "yes!" normalises to "yes" too.
    assert process_punctuation("yes!") == "yes "
    assert question_accuracy("yes!", ["yes!"] * 10) == 0.0  # identical GT "yes!" vs prediction "yes"


PUNCT_CASES = [
    "1,000", "1,000 red,white", "red,white", "red, white", "a/b", "a / b", "(left)", "left (side)", "3.", "3.5", ".5",
    "mr. smith", "dr.who", "e.g.", "u.s.a.", "t-shirt", "t - shirt", "yes!", "what?", "don't", "12:30", "a;b", "a ;b",
    '"quoted"', "x=y", "1+1", "back\\slash", "snake_case", "<tag>", "@home", "`tick`", "{braces}", "[brackets]",
    "1,2,3", "1, 2", "9,a", "." * 40 + "x", "a." * 40, "", " ", "none of the above", "Ten", "the dog's bone",
    "an apple a day", "oclock", "youre", "whats up", "wont stop", "I'm", "Ive", "y'all'dve",
]


@pytest.mark.parametrize("text", PUNCT_CASES)
def test_processing_matches_official_port(text):
    ref = OfficialVQAEval({}, {})
    assert process_punctuation(text) == ref.processPunctuation(text)
    assert process_digit_article(text) == ref.processDigitArticle(text)
    assert normalize_answer(text) == ref.processDigitArticle(ref.processPunctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def test_period_strip_count_quirk():
    # re.UNICODE (32) is passed as sub()'s count: only the first 32 periods go.
    assert process_punctuation("." * 40) == "." * 8


def test_random_strings_match_official_port():
    rng = random.Random(7)
    alphabet = list("ab1 2,.-!?'/():;\"_") + ["the ", "two ", "dont ", "none ", "An "]
    ref = OfficialVQAEval({}, {})
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert normalize_answer(s) == ref.processDigitArticle(ref.processPunctuation(s.replace("\n", " ").replace("\t", " ").strip())), s


def test_random_questions_match_official_evaluation():
    rng = random.Random(11)
    pool = ["yes", "no", "2", "two", "3", "t-shirt", "t shirt", "red", "Red.", "1,000", "1000", "a dog", "dog", "yes!", "the cat"]
    types = ["yes/no", "number", "other"]
    examples, preds = [], {}
    for q in range(400):
        kind = rng.random()
        gt = [rng.choice(pool[:3])] * 10 if kind < 0.2 else [rng.choice(pool) for _ in range(10)]
        examples.append(ex(5000 + q, gt, types[q % 3], ["what", "is the", "how many"][q % 3 if q % 7 else 0]))
        preds[5000 + q] = rng.choice(pool)
    ref = official(examples, preds)
    mine = evaluate(preds, examples)
    assert mine.official() == ref.accuracy
    assert mine.per_question == ref.evalQA


def test_overall_and_per_answer_type_hand_computed():
    examples = [ex(1000, ["yes"] * 10, "yes/no", "is the"), ex(2000, ["2"] * 3 + ["3"] * 7, "number", "how many"), ex(3000, ["red"] * 10, "other", "what color is the")]
    scores = evaluate({1000: "yes", 2000: "2", 3000: "blue"}, examples)
    assert scores.overall == pytest.approx(100 * 1.9 / 3)
    assert scores.official() == {
        "overall": 63.33,
        "perQuestionType": {"is the": 100.0, "how many": 90.0, "what color is the": 0.0},
        "perAnswerType": {"yes/no": 100.0, "number": 90.0, "other": 0.0},
    }
    assert scores.n == 3


def test_soft_score_formula_equals_point_three_count():
    # The leave-one-out mean for c matches of 10 is min(1, 0.3c): the common soft-score shortcut.
    for c in range(11):
        forms = ["x"] * c + ["y"] * (10 - c)
        assert leave_one_out_score(forms, "x") == pytest.approx(min(1.0, 0.3 * c))


def test_prediction_file_errors(tmp_path):
    examples = [ex(1000, ["yes"] * 10), ex(2000, ["no"] * 10)]
    good = tmp_path / "res.json"
    write_predictions(good, {2000: "no", 1000: "yes"})
    assert read_predictions(good) == {1000: "yes", 2000: "no"}
    assert evaluate_file(good, examples).overall == 100.0

    unknown = tmp_path / "unknown.json"
    unknown.write_text('[{"question_id": 1000, "answer": "yes"}, {"question_id": 2000, "answer": "no"}, {"question_id": 777, "answer": "x"}]')
    with pytest.raises(VQAError, match=r"unknown.json: question_id 777: not a question"):
        evaluate_file(unknown, examples)

    missing = tmp_path / "missing.json"
    missing.write_text('[{"question_id": 1000, "answer": "yes"}]')
    with pytest.raises(VQAError, match=r"question_id 2000: no prediction"):
        evaluate_file(missing, examples)
    assert evaluate_file(missing, examples, allow_missing=True).n == 1

    twice = tmp_path / "twice.json"
    twice.write_text('[{"question_id": 1000, "answer": "yes"}, {"question_id": 1000, "answer": "no"}]')
    with pytest.raises(VQAError, match=r"question_id 1000: predicted twice"):
        read_predictions(twice)
    for bad, msg in [('{"question_id": 1}', "JSON list"), ('[{"answer": "x"}]', "entry #0 lacks an integer question_id"),
                     ('[{"question_id": 5, "answer": 3}]', "question_id 5: answer must be a string"), ("[", "not valid JSON")]:
        p = tmp_path / "bad.json"
        p.write_text(bad)
        with pytest.raises(VQAError, match=re.escape(msg)):
            read_predictions(p)


def test_out_of_vocabulary_prediction_and_ground_truth_score_zero_not_error():
    # A free-form prediction is scored by string match; ground truth no vocabulary holds still counts.
    examples = [ex(1000, ["zebra crossing"] * 10), ex(2000, ["yes"] * 10, "yes/no")]
    scores = evaluate({1000: "yes", 2000: "yes"}, examples)
    assert scores.per_question == {1000: 0.0, 2000: 1.0} and scores.overall == 50.0
