"""Downstream scoring of generated text (pure Python; no jax): PAPER.md §4 scores every task on
open-ended generations, and this module owns the string-level metrics.

- VQA accuracy (VQAv2 val/test, OK-VQA): the official VQA evaluation script's answer
  normalization (`normalize_vqa_answer`) and its accuracy against the 10 human answers
  (`vqa_accuracy`: the official average over the 10 leave-one-out subsets of
  min(#matches / 3, 1)). Evaluators report `vqa_score`: `vqa_accuracy` for 10-answer sets,
  any answer matched for sets with fewer.
- Exact match and SQuAD-style token F1 (multiple choice, SQuAD, DROP, closed-book QA):
  `exact_match`, `token_f1`, each the max over several references.
- Captioning (COCO Karpathy test, NoCaps, Flickr30k): `caption_metrics` runs pycocoevalcap the
  COCO way (PTB tokenizer, then BLEU-1..4, METEOR, ROUGE-L, CIDEr). SPICE is not included: its
  scorer downloads Stanford CoreNLP 3.6.0 at first use, which fails offline (RECIPES.md §4).

Scores are fractions in [0, 1] (CIDEr in [0, 10]); papers report them times 100.
"""

from __future__ import annotations

import collections
import contextlib
import io
import re
import shutil
import string
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------------------------
# VQA accuracy: the answer processing of the official VQA evaluation script
# (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py), written out here.
# ---------------------------------------------------------------------------------------------

# The official contraction map, verbatim: keys are looked up after lower-casing, so the
# capitalized keys ("Id've", "Im", "Ive", ...) never match, exactly as in the official script
# (and "somebody'd" -> "somebodyd" is the official script's own reversed entry).
VQA_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
VQA_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
VQA_ARTICLES = frozenset({"a", "an", "the"})
# Removed or replaced by a space; "'", ":" and "." are not in the official list ("." has its own
# rule below), so "don't" and "3:30" survive.
VQA_PUNCT = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\",
    "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
# The official pattern, verbatim. "(?!<=\d)" is the script's typo for a look-behind; as written it
# is a no-op, so the rule is "drop every period not followed by a digit": "3.5" and ".5" keep
# theirs, "dogs." and "2." lose it.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _vqa_punctuation(text: str) -> str:
    """The official processPunctuation. Each mark in VQA_PUNCT is deleted when it touches a space
    somewhere in the input (", " or " ,") or when the input holds a digit-comma-digit ("1,000" ->
    "1000"), and otherwise replaced by a space ("black/white" -> "black white"); then periods
    not followed by a digit are deleted. (The official script passes re.UNICODE as the `count`
    argument of sub, capping this at 32 periods; no real answer has more, so all are deleted.)"""
    out = text
    joins = _COMMA_STRIP.search(text) is not None
    for p in VQA_PUNCT:
        if joins or (p + " " in text) or (" " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _vqa_digits_articles(text: str) -> str:
    """The official processDigitArticle: lower-case, whitespace tokens, number words zero..ten
    (and "none") to digits, drop articles, expand contractions, join with single spaces."""
    words = [VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in VQA_ARTICLES]
    return " ".join(VQA_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(s: str) -> str:
    """An answer as the official VQA evaluation compares it: newlines and tabs to spaces, strip,
    punctuation (see `_vqa_punctuation`), lower-case, number words to digits, articles removed,
    contractions expanded ("dont" -> "don't"), single spaces. "Two dogs." -> "2 dogs"."""
    s = s.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digits_articles(_vqa_punctuation(s))


def _vqa_matches(pred: str, answers: Sequence[str]) -> tuple[str, list[str]]:
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of human answers, not one string")
    if len(answers) == 0:
        raise ValueError("VQA accuracy needs at least one human answer")
    return normalize_vqa_answer(pred), [normalize_vqa_answer(a) for a in answers]


def vqa_accuracy(pred: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of `pred` against the human answers (10 in VQAv2 and OK-VQA): the
    mean over each answer left out of min(#matches among the others / 3, 1). With m of 10
    matching: 1 if m >= 4, 0.9 if m == 3, 0.6 if m == 2, 0.3 if m == 1, 0 if m == 0.

    Both the prediction and every human answer get the full `normalize_vqa_answer`. The official
    script normalizes the prediction fully but the human answers only for punctuation and only
    when they disagree, relying on the annotation files being pre-normalized; on those files the
    two agree, except that here a number word or article inside a human answer ("one way") is
    normalized too ("1 way") and so can be matched."""
    p, gts = _vqa_matches(pred, answers)
    hits = [g == p for g in gts]
    total = sum(hits)
    return sum(min(1.0, (total - h) / 3.0) for h in hits) / len(hits)


def vqa_score(pred: str, answers: Sequence[str]) -> float:
    """The VQA figure the evaluators report: the official `vqa_accuracy` for human-answer sets
    (10 answers, as VQAv2 and OK-VQA have), else 1.0 if the prediction matches any of the given
    answers after the same normalization (a set with one reference answer, like the offline
    emoji VQA, would score 0 on the official formula: each answer left out leaves no match)."""
    if len(answers) >= 10:
        return vqa_accuracy(pred, answers)
    p, gts = _vqa_matches(pred, answers)
    return float(any(g == p for g in gts))


# ---------------------------------------------------------------------------------------------
# Exact match and token F1
# ---------------------------------------------------------------------------------------------


def _as_refs(refs: str | Iterable[str]) -> list[str]:
    out = [refs] if isinstance(refs, str) else list(refs)
    if not out:
        raise ValueError("need at least one reference")
    return out


def _light_normalize(s: str) -> str:
    return " ".join(s.lower().split())


def exact_match(pred: str, refs: str | Iterable[str]) -> float:
    """1.0 if `pred` equals any reference after strip, lower-case and whitespace collapsing;
    else 0.0 (punctuation still counts: "Positive." != "positive")."""
    p = _light_normalize(pred)
    return float(any(p == _light_normalize(r) for r in _as_refs(refs)))


_PUNCT_CHARS = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _squad_tokens(s: str) -> list[str]:
    """The SQuAD evaluation script's normalize_answer, split: lower-case, delete ASCII
    punctuation, articles a/an/the to spaces, whitespace tokens."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT_CHARS)
    return _SQUAD_ARTICLES.sub(" ", s).split()


def _f1(pred_toks: list[str], ref_toks: list[str]) -> float:
    if not pred_toks or not ref_toks:
        # SQuAD v2's rule for empty answers: 1 if both are empty, else 0.
        return float(pred_toks == ref_toks)
    same = sum((collections.Counter(pred_toks) & collections.Counter(ref_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(ref_toks)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, refs: str | Iterable[str]) -> float:
    """SQuAD-style F1 between the bags of normalized tokens (see `_squad_tokens`) of `pred` and
    each reference; the max over references."""
    p = _squad_tokens(pred)
    return max(_f1(p, _squad_tokens(r)) for r in _as_refs(refs))


# ---------------------------------------------------------------------------------------------
# Captioning (pycocoevalcap)
# ---------------------------------------------------------------------------------------------

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _check_caption_inputs(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> None:
    pred_ids, ref_ids = set(predictions), set(references)
    if pred_ids != ref_ids:

        def few(ids):
            try:
                ids = sorted(ids)
            except TypeError:  # mixed id types
                ids = sorted(ids, key=repr)
            return ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")

        parts = []
        if ref_ids - pred_ids:
            parts.append(
                f"{len(ref_ids - pred_ids)} ids without a prediction: {few(ref_ids - pred_ids)}"
            )
        if pred_ids - ref_ids:
            parts.append(
                f"{len(pred_ids - ref_ids)} ids without references: {few(pred_ids - ref_ids)}"
            )
        raise ValueError("predictions and references have different ids; " + "; ".join(parts))
    if not pred_ids:
        raise ValueError("no captions to score")
    for i, p in predictions.items():
        if not isinstance(p, str):
            raise TypeError(f"prediction for id {i!r} must be one string, got {type(p).__name__}")
    for i, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references for id {i!r} must be a non-empty list of strings")


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 via Java: lower-cased, PTB tokens,
    punctuation dropped) on {id: [caption, ...]}.

    Every run of whitespace is first collapsed to one space: the wrapper writes one caption per
    line and only replaces "\\n", so a "\\r" or U+2028 inside a caption would otherwise shift
    every later caption onto the wrong id. PTB tokens do not depend on whitespace, so this
    changes no token."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        raise RuntimeError("pycocoevalcap's PTB tokenizer and METEOR need `java` on the PATH")
    request = {i: [{"caption": " ".join(c.split())} for c in caps] for i, caps in captions.items()}
    out = PTBTokenizer().tokenize(request)
    bad = [i for i, caps in captions.items() if len(out.get(i, ())) != len(caps)]
    if bad:
        raise RuntimeError(f"PTB tokenizer output lost its alignment at ids {bad[:5]!r}")
    return out


def _close_meteor(scorer) -> None:
    """Stops METEOR's JVM now rather than at garbage collection and closes its pipes. The lock is
    not taken: Meteor.compute_score keeps it held if it raises, and its __del__ then waits on it
    forever, so the scorer gets a fresh lock here (its __del__ is then a harmless no-op)."""
    proc = scorer.meteor_p
    proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    scorer.lock = threading.Lock()


def caption_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    meteor: bool = True,
) -> dict[str, float]:
    """COCO caption metrics, computed as pycocoevalcap's COCOEvalCap does: PTB-tokenize the
    references and the predictions, then Bleu(4) (corpus-level, "closest" reference length),
    Meteor(), Rouge() (ROUGE-L) and Cider() on the tokenized text.

    predictions: {image id: generated caption}; references: {image id: [human captions]}; the
    two must have the same ids (ValueError naming the first missing ones otherwise). Returns
    {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} (COCOEvalCap's names) as floats;
    "METEOR" only with `meteor=True`, which launches a `java -Xmx2G` METEOR 1.5 process (about
    10 s to start: JVM plus paraphrase table; then fast). SPICE is not computed: it needs a
    Stanford CoreNLP 3.6.0 download, impossible offline. CIDEr's IDF comes from the references
    passed in, so score the whole test set in one call, never per batch. Needs `java` on the PATH
    (the tokenizer and METEOR); BLEU's progress lines to stdout are swallowed, the tokenizer's
    one-line report on stderr (printed by Java) is not."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    _check_caption_inputs(predictions, references)
    gts = ptb_tokenize(references)
    res = ptb_tokenize({i: [p] for i, p in predictions.items()})

    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    out.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if meteor:
        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            _close_meteor(scorer)
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out
