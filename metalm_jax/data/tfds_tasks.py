"""The paper's language-only downstream datasets (PAPER.md §4.2), read from prepared TFDS files.

This module owns the `TFDS_TASKS` registry (which TFDS builder, config and version each task reads,
which of its splits count as train / validation / test, how its labels become words, its prompt
templates and FLAN cluster) and `TfdsTaskSource`, random access over one split that turns each
record into a `TaskExample` (data/tasks.py). Template 0 is the paper's prompt (§4.1/§4.2:
instruction, input, options and the "TARGET:" cue all go to the encoder; for MNLI the §3.4
single-task prompt); the others are alternatives for instruction tuning. `{options}` in a template
is the example's options joined by " </s> ". Records are read with `tfds.data_source(...,
download=False)`: the data must already be prepared (array_record) under `data_dir`, and reading
it never imports TensorFlow, nor does anything here.

Splits: "validation" is always the labelled held-out split the paper reports (a dataset's
labelled test split where it has no validation split); "test" exists only where the dataset's
test split is labelled. GLUE, SuperGLUE, HellaSwag, WinoGrande and CommonGen test splits have no
labels, so those tasks have no "test". Examples without a label or answer (SNLI's "-" pairs,
Sentiment140's neutral test tweets, DROP questions whose answer TFDS stored as "") are skipped
in the splits named by `unlabelled_in`, found by one batched pass over the split's raw records
when the source opens (15-50 µs a record on a 2-core machine: 10-30 s for SNLI's 550k training
pairs, under a second for the evaluation splits).

Preparing. TFDS 4.9.10's `tfds` command imports TensorFlow at start-up, so `tfds build` always
needs it. Without TensorFlow a builder can still be prepared from Python when neither its code nor
its downloads need it: `import tensorflow_datasets as tfds, tensorflow_datasets.text;
tfds.builder(NAME, data_dir=DIR).download_and_prepare(file_format="array_record")` (importing
`.text` registers the legacy builders, which TFDS does not find on its own without TensorFlow).
TensorFlow is needed by builder code that uses `tf.*` and by every archive download (.zip,
.tar.gz): TFDS 4.9.10 extracts archives through tf.io.gfile. From reading the builders' source
(and the extractor, checked without TensorFlow; no builder was run against its real downloads):

  task            TFDS name (pinned)                        TF   why
  mnli            glue/mnli:2.0.0                           yes  zip extraction
  mnli_mismatched glue/mnli:2.0.0                           yes  zip extraction
  rte             glue/rte:2.0.0                            yes  zip extraction
  qnli            glue/qnli:2.0.0                           yes  zip extraction
  wnli            glue/wnli:2.0.0                           yes  zip extraction
  cb              super_glue/cb:1.0.2                       yes  tf.int32 in _info, zip
  anli_r1         anli/r1:0.1.0                             yes  zip extraction
  anli_r2         anli/r2:0.1.0                             yes  zip extraction
  anli_r3         anli/r3:0.1.0                             yes  zip extraction
  snli            snli:1.1.0                                yes  zip extraction
  sst2            glue/sst2:2.0.0                           yes  zip extraction
  imdb            imdb_reviews/plain_text:1.0.0             yes  tar.gz read via tf
  yelp            yelp_polarity_reviews:0.2.0               yes  tgz extraction
  sentiment140    sentiment140:1.0.0                        yes  tf.io.gfile, zip
  qqp             glue/qqp:2.0.0                            yes  zip extraction
  mrpc            glue/mrpc:2.0.0                           no   plain .txt/.tsv downloads
  paws_wiki       paws_wiki/labeled_final_tokenized:1.1.0   yes  tar.gz extraction
  dpr             definite_pronoun_resolution:1.1.0         no   plain .txt download
  winogrande      winogrande:1.2.0                          yes  zip extraction
  wsc273          wsc273:1.0.0                              no   plain .xml (needs bs4, lxml)
  copa            super_glue/copa:1.0.2                     yes  tf.int32 in _info, zip
  piqa            piqa:1.0.0                                yes  zip extraction
  hellaswag       hellaswag:1.1.0                           no   plain .jsonl downloads
  story_cloze     story_cloze/2016:1.0.0                    no   manual .csv files
  boolq           super_glue/boolq:1.0.2                    yes  tf.int32 in _info, zip
  squad_v1        squad/v1.1:3.0.0                          no   plain .json downloads
  squad_v2        squad/v2.0:3.0.0                          no   plain .json downloads
  drop            drop:2.0.0                                yes  zip extraction
  openbookqa      openbookqa:0.1.0                          yes  zip extraction
  cola            glue/cola:2.0.0                           yes  zip extraction
  wic             super_glue/wic:1.0.2                      yes  tf.int32 in _info, zip
  trec            trec:1.0.0                                yes  tf.io.gfile
  arc_easy        ai2_arc/ARC-Easy:1.0.0                    yes  zip extraction
  arc_challenge   ai2_arc/ARC-Challenge:1.0.0               yes  zip extraction
  nq_open         natural_questions_open:1.0.0              no   plain .jsonl downloads
  common_gen      gem/common_gen:1.1.0                      yes  zip extraction
  e2e_nlg         e2e_cleaned:0.1.0                         no   plain .csv downloads
  xsum            xsum:1.1.0                                yes  tf.io.gfile, manual
  samsum          samsum:1.0.0                              yes  tf.io.gfile, manual
  aeslc           aeslc:1.0.0                               yes  tf.io.gfile, zip

XSum, SAMSum and StoryCloze need files downloaded by hand (`--manual_dir`, see each builder's
MANUAL_DOWNLOAD_INSTRUCTIONS). E2E NLG is read from `e2e_cleaned` (the cleaned E2E data, one
reference per row; GEM's copy of it needs TensorFlow to prepare).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

# The record format TFDS writes (tf.train.Example), as TFDS's own protobuf classes: no TensorFlow.
from tensorflow_datasets.proto import tf_example_pb2

from metalm_jax.data.tasks import TaskExample, render, verbalize

KINDS = ("classification", "qa", "generation")
CLUSTERS = (
    "nli",
    "sentiment",
    "paraphrase",
    "coreference",
    "commonsense",
    "reading_comprehension",
    "misc",
    "closed_book_qa",
    "struct_to_text",
    "summarization",
)
SPLITS = ("train", "validation", "test")
OPTIONS_SEP = " </s> "
_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.-]+)?:\d+\.\d+\.\d+$")


@dataclasses.dataclass(frozen=True)
class TfdsTaskSpec:
    """One task: where its records are and how a record becomes a TaskExample.

    Field names are the builder's features, nested ones joined by "/" ("answers/text"); `derive`
    adds fields computed from them (it must not fail on any record: a bad label becomes -1).
    """

    tfds_name: str  # "builder/config:version", pinned so prepared files are read without code
    splits: Mapping[str, str]  # our split ("train", "validation", "test") -> the TFDS split
    templates: tuple[str, ...]  # encoder prompts over the fields; [0] is the paper's
    kind: str  # one of KINDS
    cluster: str  # the FLAN cluster (PAPER.md §4.2), one of CLUSTERS
    verbalizer: tuple[str, ...] = ()  # classification: label index -> word (fixed options)
    options_key: str = ""  # classification: the field with this record's options instead
    label_key: str = "label"  # classification: the field with the label index (-1: none)
    answers_key: str = ""  # qa: every gold answer; generation: the references (optional)
    target_key: str = ""  # generation: the target text
    id_key: str = ""  # the dataset's own id field, if it has one
    derive: Callable[[dict], dict] | None = None
    unlabelled_in: tuple[str, ...] = ()  # our splits where records without a label are skipped
    manual: bool = False  # preparing needs files downloaded by hand (--manual_dir)
    needs_tf: str = ""  # why preparing needs TensorFlow ("": it does not)

    def __post_init__(self):
        problems = []
        if not _TFDS_NAME.match(self.tfds_name):
            problems.append(f"tfds_name {self.tfds_name!r} is not 'builder[/config]:x.y.z'")
        if self.kind not in KINDS or self.cluster not in CLUSTERS:
            problems.append(f"kind {self.kind!r} / cluster {self.cluster!r} is not known")
        if not self.templates or "validation" not in self.splits or set(self.splits) - {*SPLITS}:
            problems.append("needs templates and a 'validation' split (of train/validation/test)")
        if self.kind == "classification" and bool(self.verbalizer) == bool(self.options_key):
            problems.append("a classification task needs a verbalizer or an options_key (one)")
        if self.kind == "qa" and not self.answers_key:
            problems.append("a qa task needs answers_key")
        if self.kind == "generation" and not self.target_key:
            problems.append("a generation task needs target_key")
        if problems:
            raise ValueError(f"TfdsTaskSpec {self.tfds_name}: {'; '.join(problems)}")

    def prepare_command(self, data_dir: str) -> str:
        manual = " --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES" if self.manual else ""
        command = f"tfds build {self.tfds_name} --file_format=array_record --data_dir={data_dir}"
        return command + manual


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
# The registry

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


def _classify(tfds_name, splits, templates, cluster, **kw) -> TfdsTaskSpec:
    return TfdsTaskSpec(tfds_name, splits, templates, "classification", cluster, **kw)


def _glue(config, verbalizer, templates, cluster, splits=_TRAIN_VAL, needs_tf=_ZIP):
    return _classify(
        f"glue/{config}:2.0.0", splits, templates, cluster, verbalizer=verbalizer, id_key="idx",
        needs_tf=needs_tf,
    )  # fmt: skip


def _super_glue(config, templates, cluster, **kw) -> TfdsTaskSpec:
    return _classify(
        f"super_glue/{config}:1.0.2", _TRAIN_VAL, templates, cluster, id_key="idx",
        needs_tf="tf.int32 in _info, zip", **kw,
    )  # fmt: skip


def _anli(rnd: str) -> TfdsTaskSpec:
    return _classify(
        f"anli/{rnd}:0.1.0", _TRAIN_VAL_TEST, _nli("context", "hypothesis"), "nli",
        verbalizer=_ENTAIL3, id_key="uid", needs_tf=_ZIP,
    )  # fmt: skip


def _summary(tfds_name, source, target, what, needs_tf, **kw) -> TfdsTaskSpec:
    return TfdsTaskSpec(
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
TFDS_TASKS: dict[str, TfdsTaskSpec] = {
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
    "squad_v1": TfdsTaskSpec(
        "squad/v1.1:3.0.0", _TRAIN_VAL, _SQUAD, "qa", "reading_comprehension",
        answers_key="answers/text", id_key="id",
    ),
    "squad_v2": TfdsTaskSpec(
        "squad/v2.0:3.0.0", _TRAIN_VAL, tuple(t[: -len(_T)] + _UNANSWERABLE + _T for t in _SQUAD),
        "qa", "reading_comprehension", answers_key="all_answers", id_key="id", derive=_squad_v2,
    ),
    "drop": TfdsTaskSpec(
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
    "nq_open": TfdsTaskSpec(
        "natural_questions_open:1.0.0", _TRAIN_VAL,
        (
            "Answer this question: </s> {question}?" + _T,
            "{question}?" + _T,
            "Question: {question}? </s> Answer with a short phrase." + _T,
        ),
        "qa", "closed_book_qa", answers_key="answer",
    ),
    # --- struct to text
    "common_gen": TfdsTaskSpec(
        "gem/common_gen:1.1.0", _TRAIN_VAL,
        (
            "Concepts: {concept_list} </s> Write a sentence that includes all these words." + _T,
            "Make a sentence using these words: {concept_list}" + _T,
            "{concept_list} </s> What is a sentence that uses all of the words above?" + _T,
        ),
        "generation", "struct_to_text", target_key="target", answers_key="references",
        id_key="gem_id", derive=_common_gen, needs_tf=_ZIP,
    ),
    "e2e_nlg": TfdsTaskSpec(
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


# ---------------------------------------------------------------------------------------------
# Reading


class _Unlabelled(ValueError):
    """A record without a usable label or answer."""


def _decode(value):
    """A TFDS value as Python: bytes -> str, arrays -> lists, numpy scalars -> int/float/bool."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    if isinstance(value, np.ndarray) and value.ndim:
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.ndarray | np.generic):
        return _decode(value.item())
    return value


def _flatten(example: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in example.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = _decode(value)
    return out


def _proto_fields(record: bytes, list_keys: frozenset) -> dict:
    """The flat fields of a serialized record (TFDS stores nested features as "a/b" keys)."""
    out = {key: [] for key in list_keys}
    for key, feature in tf_example_pb2.Example.FromString(record).features.feature.items():
        kind = feature.WhichOneof("kind")
        values = [_decode(v) for v in getattr(feature, kind).value] if kind else []
        out[key] = values if key in list_keys else (values[0] if values else "")
    return out


def _unique(values) -> tuple[str, ...]:
    values = [values] if isinstance(values, str) else values
    return tuple(dict.fromkeys(str(v) for v in values if str(v)))


def _spec(name: str) -> TfdsTaskSpec:
    if name not in TFDS_TASKS:
        raise ValueError(f"unknown TFDS task {name!r}; expected one of {sorted(TFDS_TASKS)}")
    return TFDS_TASKS[name]


def _open(name: str, split: str, data_dir: str | None, **kwargs) -> Sequence:
    spec = TFDS_TASKS[name]
    try:
        return tfds.data_source(
            spec.tfds_name, split=spec.splits[split], data_dir=data_dir, download=False, **kwargs
        )
    except (
        tfds.core.DatasetNotFoundError,
        ImportError,
        NotImplementedError,
        FileNotFoundError,
    ) as e:
        # Unprepared: not found (no code, no files), builder code that needs TensorFlow, or
        # code without files (TFDS then looks for TFRecord files, which have no random access).
        where = data_dir or tfds.core.constants.DATA_DIR
        if spec.needs_tf:
            tf = f"with TensorFlow installed, which this builder needs too ({spec.needs_tf})"
        else:
            tf = "TFDS 4.9.10's tfds command imports TensorFlow; data/tfds_tasks.py says how to "
            tf += "prepare this one from Python without it"
        cause = str(e).splitlines()[0] if str(e) else ""
        raise FileNotFoundError(
            f"TFDS task {name!r}: no prepared {spec.tfds_name} (array_record) under "
            f"data_dir={where!r}. Prepare it on a machine with network access ({tf}):\n"
            f"  {spec.prepare_command(where)}\n({type(e).__name__}: {cause})"
        ) from e


class TfdsTaskSource:
    """Random access over one split of a registered task: `len(source)`, `source[i] ->
    TaskExample` (prompt `spec.templates[template]`), `source.fields(i)` (the fields templates
    see, for other templates). In the splits named by `spec.unlabelled_in`, records without a
    label are left out (indices then skip them)."""

    def __init__(self, name: str, split: str, data_dir: str | None = None, template: int = 0):
        self.spec = spec = _spec(name)
        if split not in spec.splits:
            raise ValueError(
                f"TFDS task {name!r} has splits {sorted(spec.splits)}, not {split!r} (a test "
                "split without labels is left out; see data/tfds_tasks.py)"
            )
        if not 0 <= template < len(spec.templates):
            raise ValueError(
                f"TFDS task {name!r} has templates 0..{len(spec.templates) - 1}, not {template}"
            )
        self.name, self.split, self.template = name, split, template
        self.source = _open(name, split, data_dir)
        self.records = self._labelled(data_dir) if split in spec.unlabelled_in else None

    def __len__(self) -> int:
        return len(self.source) if self.records is None else len(self.records)

    def _record(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(
                f"TFDS task {self.name}/{self.split}: index {i} out of range({len(self)})"
            )
        return int(i) if self.records is None else int(self.records[i])

    def fields(self, i: int) -> dict:
        return self._complete(_flatten(self.source[self._record(i)]))

    def __getitem__(self, i: int) -> TaskExample:
        j = self._record(i)
        fields = self._complete(_flatten(self.source[j]))
        where = f"TFDS task {self.name}/{self.split} record {j}"
        own_id = fields[self.spec.id_key] if self.spec.id_key else j
        target, options, answers = self._target(fields, where)
        return TaskExample(
            id=f"{self.name}/{self.split}:{own_id}",
            inputs=(render(self.spec.templates[self.template], fields, where),),
            target=target,
            options=options,
            answers=answers,
        )

    def _options(self, fields: dict) -> tuple[str, ...]:
        spec = self.spec
        return spec.verbalizer or tuple(str(o) for o in fields[spec.options_key])

    def _complete(self, fields: dict) -> dict:
        if self.spec.derive is not None:
            fields.update(self.spec.derive(fields))
        if self.spec.kind == "classification":
            fields["options"] = OPTIONS_SEP.join(self._options(fields))
        return fields

    def _target(self, fields: dict, where: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(target, options, answers), or _Unlabelled."""
        spec = self.spec
        if spec.kind == "classification":
            options, label = self._options(fields), int(fields[spec.label_key])
            if not 0 <= label < len(options):  # verbalize would read -1 as the last option
                raise _Unlabelled(f"{where}: label {label} is not an index into options {options}")
            return verbalize(label, options, where), options, ()
        if spec.kind == "qa":
            answers = _unique(fields[spec.answers_key])
            if not answers:
                raise _Unlabelled(f"{where}: no answer")
            return answers[0], (), answers
        target = str(fields[spec.target_key])
        if not target:
            raise _Unlabelled(f"{where}: empty target")
        return target, (), _unique(fields[spec.answers_key]) if spec.answers_key else ()

    def _labelled(self, data_dir: str | None) -> np.ndarray:
        """int64[n]: the records with a label, from one batched pass over the raw records."""
        n = len(self.source)
        if n == 0:
            return np.zeros(0, np.int64)
        raw = _open(
            self.name,
            self.split,
            data_dir,
            deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
        )
        list_keys = frozenset(k for k, v in _flatten(self.source[0]).items() if isinstance(v, list))
        keep = []
        for start in range(0, n, 1024):
            keys = list(range(start, min(n, start + 1024)))
            for j, record in zip(keys, raw.__getitems__(keys), strict=True):
                try:
                    self._target(self._complete(_proto_fields(record, list_keys)), "")
                except _Unlabelled:
                    continue
                keep.append(j)
        return np.asarray(keep, np.int64)
