"""Downstream metrics (eval/metrics.py): VQA normalization and accuracy, EM / token F1 (pure
Python), and the pycocoevalcap caption metrics (need java)."""

import contextlib
import io
import shutil

import pytest

from metalm_jax.eval.metrics import (
    caption_metrics,
    exact_match,
    normalize_vqa_answer,
    token_f1,
    vqa_accuracy,
    vqa_score,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")


# ---------------------------------------------------------------------------------------------
# VQA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, want",
    [
        # periods: dropped unless a digit follows ("3.5" keeps its decimal point)
        ("Two dogs.", "2 dogs"),
        ("3.5", "3.5"),
        ("2.", "2"),
        ("Mr. Smith", "mr smith"),
        # other punctuation: next to a space -> deleted, else -> a space
        ("red, white", "red white"),
        ("red,white", "red white"),
        ("black/white", "black white"),
        ("t-shirt", "t shirt"),
        ("yes!", "yes"),
        ('"stop"', "stop"),
        # a digit-comma-digit anywhere: every mark deleted ("1,000" -> "1000", not "1 000")
        ("1,000", "1000"),
        # apostrophes and colons are not in the official list
        ("don't", "don't"),
        ("3:30", "3:30"),
        # articles
        ("the cat", "cat"),
        ("A  Cat on an Mat", "cat on mat"),
        # number words zero..ten (and "none") -> digits; others untouched
        ("none", "0"),
        ("Ten", "10"),
        ("eleven", "eleven"),
        # contractions (official map)
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("whats that", "what's that"),
        ("yall'll", "y'all'll"),
        # the map's capitalized keys never match after lower-casing, as in the official script
        ("Im", "im"),
        # whitespace: tabs/newlines, strip, single spaces
        ("  yes\n\tsir  ", "yes sir"),
        ("", ""),
    ],
)
def test_normalize_vqa_answer(raw, want):
    assert normalize_vqa_answer(raw) == want


def test_vqa_accuracy_leave_one_out_hand_worked():
    answers = ["yes"] * 3 + ["no"] * 7
    # Leave out one of the 3 "yes": 2 matches among the other 9 -> min(2/3, 1) = 2/3 (3 times).
    # Leave out one of the 7 "no": 3 matches among the other 9 -> min(3/3, 1) = 1 (7 times).
    # Mean: (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10 = 0.9
    assert vqa_accuracy("yes", answers) == pytest.approx(0.9)
    assert vqa_score("yes", answers) == pytest.approx(0.9)  # what the evaluators report
    # 1 match: leave it out -> 0/3 (once); leave out a miss -> 1/3 (9 times): 9 * 1/3 / 10 = 0.3
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3)
    assert vqa_score("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3)
    # 2 matches: (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    # 4 matches: leaving any one out still leaves >= 3 -> 1
    assert vqa_accuracy("yes", ["yes"] * 4 + ["no"] * 6) == 1.0


def test_vqa_accuracy_extremes_and_normalization():
    assert vqa_accuracy("maybe", ["yes"] * 10) == 0.0
    assert vqa_score("maybe", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    # prediction and human answers are both normalized before matching
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("the dog", ["dog"] * 5 + ["Dog."] * 5) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 1.0


def test_vqa_accuracy_rejects_bad_answers():
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError, match="not one string"):
        vqa_accuracy("yes", "yes")


# ---------------------------------------------------------------------------------------------
# Exact match and token F1
# ---------------------------------------------------------------------------------------------


def test_exact_match():
    assert exact_match("  Positive ", ["negative", "positive"]) == 1.0
    assert exact_match("New   York", "new york") == 1.0
    assert exact_match("positive.", "positive") == 0.0  # punctuation counts
    assert exact_match("entailment", ["neutral", "contradiction"]) == 0.0
    with pytest.raises(ValueError, match="at least one reference"):
        exact_match("x", [])


def test_token_f1():
    # pred [cat, sat] vs ref [cat, sat, down]: overlap 2, P = 2/2, R = 2/3, F1 = 2PR/(P+R) = 0.8
    assert token_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)
    # max over refs: [paris, france] vs [france]: P = 1/2, R = 1, F1 = 2/3; vs [lyon]: 0
    assert token_f1("Paris, France", ["Lyon", "France"]) == pytest.approx(2 / 3)
    # bag of tokens: [cat, cat] vs [cat] overlap min(2, 1) = 1: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("the cat cat", "cat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("Cat!", "cat") == 1.0
    # empty after normalization: 1 only when both are empty (SQuAD v2 rule)
    assert token_f1("", "the") == 1.0
    assert token_f1("the", "cat") == 0.0


# ---------------------------------------------------------------------------------------------
# Captioning
# ---------------------------------------------------------------------------------------------

REFS = {
    1: [
        "A man riding a wave on top of a surfboard.",
        "A surfer rides a large wave in the ocean.",
        "A person on a surfboard riding a wave.",
    ],
    2: [
        "Two dogs playing with a frisbee in the grass.",
        "A pair of dogs run across a grassy field.",
        "Two brown dogs chase a red frisbee on the lawn.",
    ],
    3: [
        "A plate of food with broccoli and rice.",
        "A white plate topped with rice, meat and broccoli.",
        "Broccoli, rice and chicken on a dinner plate.",
    ],
}
GOOD = {
    1: "A man riding a wave on a surfboard.",
    2: "Two dogs play with a frisbee.",
    3: "A plate of rice and broccoli.",
}
BAD = {
    1: "A cat sleeping on a couch.",
    2: "A red bus on the street.",
    3: "People standing near a tall building.",
}


def _direct(refs, preds, meteor):
    """pycocoevalcap called directly, the COCOEvalCap way."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in cs] for i, cs in refs.items()})
    res = tok.tokenize({i: [{"caption": p}] for i, p in preds.items()})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    out = {f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor:
        out["METEOR"] = Meteor().compute_score(gts, res)[0]
    return out


@needs_java
def test_caption_metrics_equal_direct_pycocoevalcap(capsys):
    got = caption_metrics(GOOD, REFS, meteor=False)
    assert set(got) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert all(type(v) is float for v in got.values())
    assert got == pytest.approx(_direct(REFS, GOOD, meteor=False), rel=1e-12)
    assert "testlen" not in capsys.readouterr().out  # BLEU's printing is silenced
    assert 0 < got["Bleu_4"] < 1 and got["CIDEr"] > 0


@needs_java
def test_caption_metrics_perfect_beats_bad():
    perfect = {i: refs[0] for i, refs in REFS.items()}
    best = caption_metrics(perfect, REFS, meteor=False)
    worst = caption_metrics(BAD, REFS, meteor=False)
    assert best["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert best["ROUGE_L"] == pytest.approx(1.0)
    assert best["CIDEr"] > worst["CIDEr"]
    assert best["Bleu_4"] > worst["Bleu_4"]


@needs_java
@pytest.mark.slow  # two METEOR JVM starts, ~10 s each
def test_caption_metrics_with_meteor_equal_direct():
    got = caption_metrics(GOOD, REFS)
    assert set(got) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert got == pytest.approx(_direct(REFS, GOOD, meteor=True), rel=1e-12)
    assert 0 < got["METEOR"] < 1


@needs_java
def test_caption_whitespace_cannot_shift_ids():
    # pycocoevalcap's tokenizer only replaces "\n"; a raw "\r" would split a line and move every
    # later caption to the wrong id. caption_metrics collapses whitespace first.
    preds = dict(GOOD)
    preds[1] = "A man riding\ra wave on a surfboard."
    assert caption_metrics(preds, REFS, meteor=False) == caption_metrics(GOOD, REFS, meteor=False)


def test_caption_metrics_id_mismatch_is_clear():
    refs = {i: ["a caption"] for i in range(3, 12)}
    preds = {i: "a caption" for i in range(10)}  # lacks 10 and 11; 0, 1 and 2 are extra
    with pytest.raises(ValueError, match="different ids") as e:
        caption_metrics(preds, refs, meteor=False)
    assert "2 ids without a prediction: 10, 11;" in str(e.value)
    assert "3 ids without references: 0, 1, 2" in str(e.value)
    # only the first few are named
    with pytest.raises(ValueError, match=r"9 ids without a prediction: 3, 4, 5, 6, 7, \.\.\.$"):
        caption_metrics({}, refs)


def test_caption_metrics_rejects_bad_inputs():
    with pytest.raises(ValueError, match="no captions"):
        caption_metrics({}, {})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({1: "a dog"}, {1: []})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({1: "a dog"}, {1: "a dog"})
    with pytest.raises(TypeError, match="one string"):
        caption_metrics({1: ["a dog"]}, {1: ["a dog"]})


def test_vqa_score_official_for_ten_answers_else_any_match():
    from metalm_jax.eval.metrics import vqa_accuracy, vqa_score

    ten = ["yes"] * 2 + ["no"] * 8
    assert vqa_score("yes", ten) == vqa_accuracy("yes", ten) == pytest.approx(0.6)
    assert vqa_score("Woman.", ["woman"]) == 1.0  # one reference: official formula gives 0
    assert vqa_accuracy("woman", ["woman"]) == 0.0
    assert vqa_score("two", ["2", "pair"]) == 1.0 and vqa_score("man", ["woman"]) == 0.0
