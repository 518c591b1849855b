"""The catalog of TFDS tasks: for each of the paper's language datasets, the TFDS builder, config
and version it reads, its split map, how a record's fields become template fields, its label
words, its prompt templates (template 0 in the paper's form), its kind and its FLAN cluster.
Importing it registers each task in the task registry (data/tasks/registry.py) under its name
(`_TABLE`'s keys), through data/tasks/tfds_tasks.tfds_task. Reading the records is
data/tasks/tfds_tasks.py's job; the table of which builders need TensorFlow to prepare is in its
docstring.
"""

from __future__ import annotations

import functools

from metalm_jax.data.tasks.registry import SPLITS, register
from metalm_jax.data.tasks.tfds_tasks import TfdsRecords, tfds_task

# ---------------------------------------------------------------------------------------------
# Derived fields (module-level functions, so specs pickle into data-loader workers)


def _choices(keys: tuple[str, ...], f: dict) -> dict:
    return {"choices": [f[k] for k in keys]}


def _copa(f: dict) -> dict:
    # COPA's question is "cause" or "effect".
    because = "because" if f["question"] == "cause" else "so"
    return {**_choices(("choice1", "choice2"), f), "because": because}


def _openbookqa(f: dict) -> dict:
    keys = tuple(f"question/choice_{c}" for c in "ABCD")
    return {**_choices(keys, f), "question": f["question/stem"]}


def _arc(f: dict) -> dict:
    # answerKey and the choices' letters are ClassLabels over A-E; the answer is the choice
    # carrying answerKey's letter.
    letters = list(f["choices/label"])
    return {"label": letters.index(f["answerKey"]) if f["answerKey"] in letters else -1}


def _story_cloze(f: dict) -> dict:
    return {"label": int(f["label"]) - 1}  # AnswerRightEnding is 1 or 2


def _sentiment140(f: dict) -> dict:
    return {"label": {0: 0, 4: 1}.get(int(f["polarity"]), -1)}  # 2 (neutral) is test-only


def _squad_v2(f: dict) -> dict:
    return {"all_answers": list(f["answers/text"]) or ["unanswerable"]}


def _drop(f: dict) -> dict:
    return {"all_answers": [f["answer"], *f["validated_answers"]]}


def _common_gen(f: dict) -> dict:
    return {"concept_list": ", ".join(f["concepts"])}


def _e2e(f: dict) -> dict:
    # The builder writes one content per header (TFDS mock data draws their lengths apart).
    table = zip(f["input_text/table/column_header"], f["input_text/table/content"], strict=False)
    return {"meaning_representation": ", ".join(f"{k}[{v}]" for k, v in table)}


# ---------------------------------------------------------------------------------------------
# The table

_OPTIONS = " </s> OPTIONS: </s> {options} </s> TARGET:"
_T = " </s> TARGET:"
_TRAIN_VAL = {"train": "train", "validation": "validation"}
_TRAIN_VAL_TEST = {"train": "train", "validation": "validation", "test": "test"}
_TRAIN_TEST = {"train": "train", "validation": "test", "test": "test"}  # no validation split
_ZIP = "zip extraction"
_ENTAIL3 = ("entailment", "neutral", "contradiction")
_YES_NO = ("yes", "no")
_NO_YES = ("no", "yes")
_SENTIMENT = ("Negative", "Positive")


def _nli(premise: str, hypothesis: str) -> tuple[str, ...]:
    p, h = "{" + premise + "}", "{" + hypothesis + "}"
    return (
        f"Premise: {p} </s> Hypothesis: {h} </s> Does the premise entail the hypothesis?"
        + _OPTIONS,
        f'{p} </s> Based on the paragraph above, can we conclude that "{h}"?' + _OPTIONS,
        f"Read the text and decide whether the sentence is true. </s> {p} </s> Sentence: {h}"
        + _OPTIONS,
    )


def _pair(first: str, second: str, question: str) -> tuple[str, ...]:
    a, b = "{" + first + "}", "{" + second + "}"
    return (
        f"{a} </s> {b} </s> {question}" + _OPTIONS,
        f'First: "{a}" </s> Second: "{b}" </s> {question}' + _OPTIONS,
        f"{question} </s> {a} </s> {b}" + _OPTIONS,
    )


def _sentiment(text: str, what: str) -> tuple[str, ...]:
    t = "{" + text + "}"
    return (
        f"What is the sentiment of the following {what}? </s> {t}" + _OPTIONS,
        f"{t} </s> Is this {what} positive or negative?" + _OPTIONS,
        f"Did the author of this {what} like it or not? </s> {t}" + _OPTIONS,
    )


def _summaries(source: str, what: str) -> tuple[str, ...]:
    s = "{" + source + "}"
    return (
        f"Summarize this {what}: </s> {s}" + _T,
        f"{s} </s> What is a short summary of the {what} above?" + _T,
        f"Write a one-sentence summary of the following {what}. </s> {s}" + _T,
    )


def _task(tfds_name, splits, templates, kind, cluster, **kw) -> tuple:
    """(records, templates, kind, cluster): what `tfds_task` registers under the table's key."""
    return TfdsRecords(tfds_name, splits, **kw), templates, kind, cluster


def _classify(tfds_name, splits, templates, cluster, **kw) -> tuple:
    return _task(tfds_name, splits, templates, "classification", cluster, **kw)


def _glue(config, verbalizer, templates, cluster, splits=_TRAIN_VAL, needs_tf=_ZIP):
    return _classify(
        f"glue/{config}:2.0.0", splits, templates, cluster, verbalizer=verbalizer, id_key="idx",
        needs_tf=needs_tf,
    )  # fmt: skip


def _super_glue(config, templates, cluster, **kw) -> tuple:
    return _classify(
        f"super_glue/{config}:1.0.2", _TRAIN_VAL, templates, cluster, id_key="idx",
        needs_tf="tf.int32 in _info, zip", **kw,
    )  # fmt: skip


def _anli(rnd: str) -> tuple:
    return _classify(
        f"anli/{rnd}:0.1.0", _TRAIN_VAL_TEST, _nli("context", "hypothesis"), "nli",
        verbalizer=_ENTAIL3, id_key="uid", needs_tf=_ZIP,
    )  # fmt: skip


def _summary(tfds_name, source, target, what, needs_tf, **kw) -> tuple:
    return _task(
        tfds_name, _TRAIN_VAL_TEST, _summaries(source, what), "generation", "summarization",
        target_key=target, needs_tf=needs_tf, **kw,
    )  # fmt: skip


_MNLI = (
    "Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:",  # PAPER.md §3.4
    *_nli("premise", "hypothesis")[1:],
)
_SST2 = (
    "Would the following phrase be considered positive or negative? </s> {sentence} </s> "
    "OPTIONS: </s> Positive </s> Negative </s> TARGET:",  # PAPER.md §4.2, verbatim
    *_sentiment("sentence", "movie review sentence")[1:],
)
_ARC = (
    "{question}" + _OPTIONS,
    "Answer the following question. </s> {question}" + _OPTIONS,
    "Question: {question} </s> Which of the options is correct?" + _OPTIONS,
)
_SQUAD = (
    "Read this and answer the question. </s> {context} </s> {question}" + _T,
    "{title} </s> {context} </s> Question: {question}" + _T,
    "Answer a question about this article: </s> {context} </s> {question}" + _T,
)
_UNANSWERABLE = ' (If it cannot be answered, say "unanswerable".)'
_OPTION_1_2 = functools.partial(_choices, ("option1", "option2"))  # WinoGrande, WSC273
_SOL_1_2 = functools.partial(_choices, ("sol1", "sol2"))  # PIQA

# Verbalizers follow each builder's ClassLabel order, read from its source: GLUE's WNLI is
# (not_entailment, entailment), SuperGLUE's CB (entailment, contradiction, neutral), ANLI's
# (e, n, c), TREC's coarse labels (DESC, ENTY, ABBR, HUM, NUM, LOC).
_TABLE: dict[str, tuple] = {
    # --- NLI
    "mnli": _glue(
        "mnli", _ENTAIL3, _MNLI, "nli", {"train": "train", "validation": "validation_matched"}
    ),
    "mnli_mismatched": _glue(
        "mnli", _ENTAIL3, _MNLI, "nli", {"validation": "validation_mismatched"}
    ),
    "rte": _glue("rte", _YES_NO, _nli("sentence1", "sentence2"), "nli"),
    "qnli": _glue(
        "qnli", _YES_NO, _pair("question", "sentence", "Does the sentence answer the question?"),
        "nli",
    ),
    "wnli": _glue("wnli", _NO_YES, _nli("sentence1", "sentence2"), "nli"),
    "cb": _super_glue(
        "cb", _nli("premise", "hypothesis"), "nli",
        verbalizer=("entailment", "contradiction", "neutral"),
    ),
    "anli_r1": _anli("r1"),
    "anli_r2": _anli("r2"),
    "anli_r3": _anli("r3"),
    "snli": _classify(
        "snli:1.1.0", _TRAIN_VAL_TEST, _nli("premise", "hypothesis"), "nli",
        verbalizer=_ENTAIL3, unlabelled_in=SPLITS, needs_tf=_ZIP,
    ),
    # --- sentiment
    "sst2": _glue("sst2", _SENTIMENT, _SST2, "sentiment"),
    "imdb": _classify(
        "imdb_reviews/plain_text:1.0.0", _TRAIN_TEST, _sentiment("text", "movie review"),
        "sentiment", verbalizer=_SENTIMENT, needs_tf="tar.gz read via tf",
    ),
    "yelp": _classify(
        "yelp_polarity_reviews:0.2.0", _TRAIN_TEST, _sentiment("text", "Yelp review"),
        "sentiment", verbalizer=_SENTIMENT, needs_tf="tgz extraction",
    ),
    "sentiment140": _classify(
        "sentiment140:1.0.0", _TRAIN_TEST, _sentiment("text", "tweet"), "sentiment",
        verbalizer=_SENTIMENT, derive=_sentiment140, unlabelled_in=("validation", "test"),
        needs_tf="tf.io.gfile, zip",
    ),
    # --- paraphrase
    "qqp": _glue(
        "qqp", _NO_YES,
        _pair("question1", "question2", "Do these two questions ask the same thing?"),
        "paraphrase",
    ),
    "mrpc": _glue(
        "mrpc", _NO_YES,
        _pair("sentence1", "sentence2", "Do these two sentences mean the same thing?"),
        "paraphrase", needs_tf="",
    ),
    "paws_wiki": _classify(
        "paws_wiki/labeled_final_tokenized:1.1.0", _TRAIN_VAL_TEST,
        _pair("sentence1", "sentence2", "Are these two sentences paraphrases of each other?"),
        "paraphrase", verbalizer=_NO_YES, needs_tf="tar.gz extraction",
    ),
    # --- coreference
    "dpr": _classify(
        "definite_pronoun_resolution:1.1.0", _TRAIN_TEST,
        (
            '{sentence} </s> Who or what is "{pronoun}" in the sentence above?' + _OPTIONS,
            'In "{sentence}", what does "{pronoun}" refer to?' + _OPTIONS,
            "{sentence} </s> Which candidate does the pronoun {pronoun} stand for?" + _OPTIONS,
        ),
        "coreference", options_key="candidates",
    ),
    "winogrande": _classify(
        "winogrande:1.2.0", {"train": "train_xl", "validation": "validation"},
        (
            "How does the sentence end? </s> {sentence} </s> What does the _ stand for?"
            + _OPTIONS,
            "{sentence} </s> Which option fills the blank (_) best?" + _OPTIONS,
            "Fill in the blank: {sentence}" + _OPTIONS,
        ),
        "coreference", options_key="choices", derive=_OPTION_1_2, needs_tf=_ZIP,
    ),
    "wsc273": _classify(
        "wsc273:1.0.0", {"validation": "test", "test": "test"},
        (
            '{text} </s> In the sentence above, who or what does "{pronoun_text}" refer to?'
            + _OPTIONS,
            'In "{text}", the pronoun "{pronoun_text}" means which of the options?' + _OPTIONS,
            "{text} </s> Resolve the pronoun {pronoun_text}." + _OPTIONS,
        ),
        "coreference", options_key="choices", derive=_OPTION_1_2, id_key="idx",
    ),
    # --- commonsense
    "copa": _super_glue(
        "copa",
        (
            "{premise} </s> What is the {question}?" + _OPTIONS,
            "Premise: {premise} </s> What was the {question} of this?" + _OPTIONS,
            "{premise} This happened {because}... </s> Pick the more plausible continuation."
            + _OPTIONS,
        ),
        "commonsense", options_key="choices", derive=_copa,
    ),
    "piqa": _classify(
        "piqa:1.0.0", _TRAIN_VAL,
        (
            "Here is a goal: {goal} </s> How would you accomplish this goal?" + _OPTIONS,
            "Goal: {goal} </s> Which solution is more sensible?" + _OPTIONS,
            "{goal}" + _OPTIONS,
        ),
        "commonsense", options_key="choices", derive=_SOL_1_2, id_key="id", needs_tf=_ZIP,
    ),
    "hellaswag": _classify(
        "hellaswag:1.1.0", _TRAIN_VAL,
        (
            "What happens next in this paragraph? </s> {context}" + _OPTIONS,
            "{activity_label}: {context} </s> How does the description continue?" + _OPTIONS,
            "Complete the next sentence: </s> {context}" + _OPTIONS,
        ),
        "commonsense", options_key="endings",
    ),
    "story_cloze": _classify(
        "story_cloze/2016:1.0.0", {"validation": "validation", "test": "test"},
        (
            "{context} </s> What is the best ending of this story?" + _OPTIONS,
            "Story: {context} </s> How does it end?" + _OPTIONS,
            "Choose the most sensible ending for the story. </s> {context}" + _OPTIONS,
        ),
        "commonsense", options_key="endings", derive=_story_cloze, manual=True,
    ),
    # --- reading comprehension
    "boolq": _super_glue(
        "boolq",
        (
            "{passage} </s> Can we conclude that {question}?" + _OPTIONS,
            "{passage} </s> Question: {question}?" + _OPTIONS,
            "Read the passage and answer the yes/no question. </s> {passage} </s> {question}?"
            + _OPTIONS,
        ),
        "reading_comprehension", verbalizer=_NO_YES,
    ),
    "squad_v1": _task(
        "squad/v1.1:3.0.0", _TRAIN_VAL, _SQUAD, "qa", "reading_comprehension",
        answers_key="answers/text", id_key="id",
    ),
    "squad_v2": _task(
        "squad/v2.0:3.0.0", _TRAIN_VAL, tuple(t[: -len(_T)] + _UNANSWERABLE + _T for t in _SQUAD),
        "qa", "reading_comprehension", answers_key="all_answers", id_key="id", derive=_squad_v2,
    ),
    "drop": _task(
        "drop:2.0.0", {"train": "train", "validation": "dev"},
        (
            "Answer based on context: </s> {passage} </s> {question}" + _T,
            "{passage} </s> Question: {question}" + _T,
            "Answer with a number, a date or a span of the passage. </s> {passage} </s> {question}"
            + _T,
        ),
        "qa", "reading_comprehension", answers_key="all_answers", id_key="query_id",
        derive=_drop, unlabelled_in=("train", "validation"), needs_tf=_ZIP,
    ),
    "openbookqa": _classify(
        "openbookqa:0.1.0", _TRAIN_VAL_TEST,
        (
            "Fact: {fact1} </s> Question: {question}" + _OPTIONS,
            "{fact1} </s> Given the fact above, answer the question: {question}" + _OPTIONS,
            "{question}" + _OPTIONS,
        ),
        "reading_comprehension", options_key="choices", label_key="answerKey",
        derive=_openbookqa, needs_tf=_ZIP,
    ),
    # --- misc
    "cola": _glue(
        "cola", ("unacceptable", "acceptable"),
        (
            "Is the following sentence grammatically acceptable? </s> {sentence}" + _OPTIONS,
            "{sentence} </s> Would a linguist rate this sentence acceptable or unacceptable?"
            + _OPTIONS,
            "Sentence: {sentence} </s> Is it grammatical?" + _OPTIONS,
        ),
        "misc",
    ),
    "wic": _super_glue(
        "wic",
        (
            '{sentence1} </s> {sentence2} </s> Is the word "{word}" used in the same way in the '
            "two sentences above?" + _OPTIONS,
            'Does "{word}" mean the same thing in "{sentence1}" and "{sentence2}"?' + _OPTIONS,
            "Word: {word} </s> First: {sentence1} </s> Second: {sentence2} </s> Same meaning?"
            + _OPTIONS,
        ),
        "misc", verbalizer=_NO_YES,
    ),
    "trec": _classify(
        "trec:1.0.0", _TRAIN_TEST,
        (
            "What type of thing is the question asking about? </s> {text}" + _OPTIONS,
            "{text} </s> What kind of answer does this question want?" + _OPTIONS,
            "Question: {text} </s> Answer type?" + _OPTIONS,
        ),
        "misc", label_key="label-coarse", needs_tf="tf.io.gfile",
        verbalizer=("description", "entity", "abbreviation", "human", "number", "location"),
    ),
    # --- closed-book QA
    "arc_easy": _classify(
        "ai2_arc/ARC-Easy:1.0.0", _TRAIN_VAL_TEST, _ARC, "closed_book_qa",
        options_key="choices/text", derive=_arc, id_key="id", needs_tf=_ZIP,
    ),
    "arc_challenge": _classify(
        "ai2_arc/ARC-Challenge:1.0.0", _TRAIN_VAL_TEST, _ARC, "closed_book_qa",
        options_key="choices/text", derive=_arc, id_key="id", needs_tf=_ZIP,
    ),
    "nq_open": _task(
        "natural_questions_open:1.0.0", _TRAIN_VAL,
        (
            "Answer this question: </s> {question}?" + _T,
            "{question}?" + _T,
            "Question: {question}? </s> Answer with a short phrase." + _T,
        ),
        "qa", "closed_book_qa", answers_key="answer",
    ),
    # --- struct to text
    "common_gen": _task(
        "gem/common_gen:1.1.0", _TRAIN_VAL,
        (
            "Concepts: {concept_list} </s> Write a sentence that includes all these words." + _T,
            "Make a sentence using these words: {concept_list}" + _T,
            "{concept_list} </s> What is a sentence that uses all of the words above?" + _T,
        ),
        "generation", "struct_to_text", target_key="target", answers_key="references",
        id_key="gem_id", derive=_common_gen, needs_tf=_ZIP,
    ),
    "e2e_nlg": _task(
        "e2e_cleaned:0.1.0", _TRAIN_VAL_TEST,
        (
            "Attributes: {meaning_representation} </s> Describe this restaurant in a sentence."
            + _T,
            "{meaning_representation} </s> Write a sentence that contains all this data." + _T,
            "Generate a restaurant description from this data: {meaning_representation}" + _T,
        ),
        "generation", "struct_to_text", target_key="target_text", derive=_e2e,
    ),
    # --- summarization
    "xsum": _summary(
        "xsum:1.1.0", "document", "summary", "article", "tf.io.gfile, manual", manual=True
    ),
    "samsum": _summary(
        "samsum:1.0.0", "dialogue", "summary", "dialogue", "tf.io.gfile, manual", manual=True,
        id_key="id",
    ),
    "aeslc": _summary("aeslc:1.0.0", "email_body", "subject_line", "email", "tf.io.gfile, zip"),
}  # fmt: skip

for _name, _entry in _TABLE.items():
    register(tfds_task(_name, *_entry))
