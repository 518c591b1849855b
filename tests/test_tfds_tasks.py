"""TFDS tasks (data/tasks/tfds_tasks.py, data/tasks/tfds_catalog.py): their registry records,
prompts and labels, read through
`tfds.testing.mock_data` and through real array_record files written by stand-in builders; no
network, no TensorFlow.

mock_data's USE_CODE policy builds each builder from its code. Two gaps are bridged here:
- super_glue's `_info` uses tf.int32, so its code cannot run without TensorFlow: stand-in
  builders with the same name, configs, version and features (np.int32 for tf.int32) write the
  metadata, and mock_data reads it from `data_dir` (the USE_FILES path of its AUTO policy).
- mock_data's data sources answer `__getitems__` with a function that misses its `self`
  argument (TFDS 4.9.10, testing/mocking.py), so the batched label pass over SNLI, DROP and
  Sentiment140 is run with a fixed replacement (`batched_mock_reads`).
- mock_data's data sources ignore `max_value`: plain-integer labels (WSC273, HellaSwag,
  StoryCloze, Sentiment140) come out as 0..254, and ARC's answer letter is drawn apart from the
  choices' letters, so many of their mock records have no valid label; those must raise.
"""

import sys
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

# Registers the legacy builders (glue, winogrande, hellaswag, xsum, ...): without TensorFlow,
# TFDS's own lazy import of them stops at the first module that needs it.
import tensorflow_datasets.summarization  # noqa: F401
import tensorflow_datasets.text  # noqa: F401
from tensorflow_datasets.testing import mocking

from metalm_jax.data.tasks import tfds_catalog, tfds_tasks
from metalm_jax.data.tasks.examples import TaskExample, render
from metalm_jax.data.tasks.registry import task_spec
from metalm_jax.data.tasks.tfds_tasks import TfdsRecords, TfdsTaskSource, tfds_task_names

TFDS_TASKS = tfds_task_names()

# Labels that are plain integers rather than ClassLabels: mock_data's data sources draw them
# from 0..254 (they ignore `max_value`), so most mock records of these tasks have no valid label.
PLAIN_INT_LABELS = {"wsc273", "hellaswag", "story_cloze", "sentiment140"}
# ARC's answer is the choice carrying answerKey's letter; mock data draws the letters at random.
RANDOM_ANSWER_KEY = {"arc_easy", "arc_challenge"}


def _text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


# --- stand-in builders ---------------------------------------------------------------------------

_NLI3 = ["entailment", "contradiction", "neutral"]
_SUPER_GLUE_FEATURES = {  # super_glue.py's _info for these configs, np.int32 for tf.int32
    "boolq": {"question": "text", "passage": "text", "label": ["False", "True"]},
    "cb": {"premise": "text", "hypothesis": "text", "label": _NLI3},
    "copa": {
        "premise": "text", "choice1": "text", "choice2": "text", "question": "text",
        "label": ["choice1", "choice2"],
    },
    "wic": {
        "word": "text", "sentence1": "text", "sentence2": "text", "start1": "int", "start2": "int",
        "end1": "int", "end2": "int", "label": ["False", "True"],
    },
}  # fmt: skip

with tfds.core.registered.skip_registration():

    class _SuperGlueFiles(tfds.core.GeneratorBasedBuilder):
        """Writes the metadata `tfds build super_glue/<config>` writes, without TensorFlow."""

        name = "super_glue"
        VERSION = tfds.core.Version("1.0.2")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c) for c in _SUPER_GLUE_FEATURES]

        def _info(self):
            kinds = {"text": tfds.features.Text(), "int": np.int32}
            features = {"idx": np.int32}
            for key, kind in _SUPER_GLUE_FEATURES[self.builder_config.name].items():
                features[key] = (
                    kinds[kind] if isinstance(kind, str) else tfds.features.ClassLabel(names=kind)
                )
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples() for s in ("train", "validation")}

        def _generate_examples(self):
            spec = _SUPER_GLUE_FEATURES[self.builder_config.name]
            ex = {k: "x" if v == "text" else 0 for k, v in spec.items()}
            yield 0, {**ex, "idx": 0}

    class _SnliFiles(tfds.core.GeneratorBasedBuilder):
        """SNLI as `tfds build snli` writes it, with pairs that have no gold label (-1)."""

        name = "snli"
        VERSION = tfds.core.Version("1.1.0")

        def _info(self):
            labels = tfds.features.ClassLabel(names=["entailment", "neutral", "contradiction"])
            features = {"premise": tfds.features.Text(), "hypothesis": tfds.features.Text()}
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({**features, "label": labels})
            )

        def _split_generators(self, dl_manager):
            return {"validation": self._generate_examples()}

        def _generate_examples(self):
            for i, label in enumerate([0, -1, 2, 1, -1, 0]):
                yield (
                    i,
                    {"premise": f"premise {i} é", "hypothesis": f"hypothesis {i}", "label": label},
                )

    class _DropFiles(tfds.core.GeneratorBasedBuilder):
        """DROP as `tfds build drop` writes it, with an answer TFDS stored as "" (a year-only
        date) and one that only the validated answers carry."""

        name = "drop"
        VERSION = tfds.core.Version("2.0.0")

        def _info(self):
            text = tfds.features.Text
            features = {k: text() for k in ("passage", "question", "answer", "query_id")}
            features["validated_answers"] = tfds.features.Sequence(text())
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"dev": self._generate_examples()}

        def _generate_examples(self):
            answers = [("", []), ("", ["7"]), ("3", ["3", "three"])]
            for i, (answer, validated) in enumerate(answers):
                yield i, {
                    "passage": f"passage {i}", "question": f"question {i}?", "answer": answer,
                    "validated_answers": validated, "query_id": f"q{i}",
                }  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def tfds_temp_dirs(tmp_path_factory):
    # Every builder built from code leaves an empty mkdtemp("tfds") behind (TFDS 4.9.10,
    # DatasetInfo.initialize_from_bucket): keep them under pytest's tmp dir, not in /tmp.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tfds_temp")))
        yield


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("prepared"))
    tfds.disable_progress_bar()
    for cls in (_SnliFiles, _DropFiles):
        cls(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_tasks"))
    tfds.disable_progress_bar()
    for config in _SUPER_GLUE_FEATURES:
        _SuperGlueFiles(
            config=config, data_dir=data_dir, file_format="array_record"
        ).download_and_prepare()
    return data_dir


@pytest.fixture
def batched_mock_reads(monkeypatch):
    def getitems(record_keys, generator, serialized=False):
        assert not serialized  # the raw-bytes generator serializes already
        return [generator[k] for k in record_keys]

    monkeypatch.setattr(mocking, "_getitems", getitems)


@pytest.fixture
def mocked(metadata_dir, batched_mock_reads):
    with tfds.testing.mock_data(num_examples=5, data_dir=metadata_dir):
        yield


def _raw(name: str, split: str, i: int) -> dict:
    """Record i of a task's split as mock_data generates it (deterministic per index)."""
    records = task_spec(name).records
    return tfds.data_source(records.tfds_name, split=records.splits[split], download=False)[i]


# --- the paper's prompts, from mock data -------------------------------------------------------


def test_mnli_uses_the_single_task_prompt_of_section_3_4(mocked):
    src = TfdsTaskSource("mnli", "validation")
    assert len(src) == 5
    for i in range(len(src)):
        raw, ex = _raw("mnli", "validation", i), src[i]
        premise, hypothesis = _text(raw["premise"]), _text(raw["hypothesis"])
        assert isinstance(ex, TaskExample)
        assert ex.inputs == (f"Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:",)
        assert ex.options == ("entailment", "neutral", "contradiction")
        assert ex.target == ex.options[int(raw["label"])]
        assert ex.id == f"mnli/validation:{int(raw['idx'])}"
    assert TfdsTaskSource("mnli_mismatched", "validation").records.splits == {
        "validation": "validation_mismatched"
    }


def test_sst2_uses_the_papers_multitask_prompt(mocked):
    src = TfdsTaskSource("sst2", "train")
    for i in range(len(src)):
        raw, ex = _raw("sst2", "train", i), src[i]
        assert ex.inputs == (
            "Would the following phrase be considered positive or negative? </s> "
            f"{_text(raw['sentence'])} </s> OPTIONS: </s> Positive </s> Negative </s> TARGET:",
        )
        assert ex.target == ("Negative", "Positive")[int(raw["label"])] and ex.target in ex.options


def test_boolq_says_no_or_yes(mocked):
    src = TfdsTaskSource("boolq", "validation")
    assert len(src) == 5  # mock examples on the stand-in's metadata, not its one written record
    for i in range(len(src)):
        raw, ex = _raw("boolq", "validation", i), src[i]
        assert ex.inputs == (
            f"{_text(raw['passage'])} </s> Can we conclude that {_text(raw['question'])}? </s> "
            "OPTIONS: </s> no </s> yes </s> TARGET:",
        )
        assert ex.options == ("no", "yes") and ex.target == ex.options[int(raw["label"])]


def test_copa_lists_its_two_choices_and_answers_with_one(mocked):
    src = TfdsTaskSource("copa", "train")
    for i in range(len(src)):
        raw, ex = _raw("copa", "train", i), src[i]
        choices = (_text(raw["choice1"]), _text(raw["choice2"]))
        assert ex.inputs == (
            f"{_text(raw['premise'])} </s> What is the {_text(raw['question'])}? </s> OPTIONS: "
            f"</s> {choices[0]} </s> {choices[1]} </s> TARGET:",
        )
        assert ex.options == choices and ex.target == choices[int(raw["label"])]
    fields = src.fields(0)
    assert tfds_catalog._copa({**fields, "question": "cause"})["because"] == "because"
    assert tfds_catalog._copa({**fields, "question": "effect"})["because"] == "so"


def test_squad_answers_are_every_gold_answer_and_the_target_the_first(mocked):
    src = TfdsTaskSource("squad_v1", "validation", template=1)
    for i in range(len(src)):
        raw, ex = _raw("squad_v1", "validation", i), src[i]
        gold = [_text(a) for a in raw["answers"]["text"]]
        assert ex.answers == tuple(dict.fromkeys(gold)) and ex.target == gold[0]
        assert ex.options == () and ex.references == ex.answers
        assert ex.inputs == (
            f"{_text(raw['title'])} </s> {_text(raw['context'])} </s> Question: "
            f"{_text(raw['question'])} </s> TARGET:",
        )
        assert ex.id == f"squad_v1/validation:{_text(raw['id'])}"


@pytest.mark.parametrize("name", sorted(TFDS_TASKS))
def test_every_task_renders_every_template_and_yields_examples(mocked, name):
    spec = task_spec(name)
    records = spec.records
    split = "train" if "train" in records.splits else "validation"
    src = TfdsTaskSource(name, split)
    assert len(src) == 5  # SNLI and DROP: every mock record has a label / an answer
    checked = 0
    for i in range(len(src)):
        fields = src.fields(i)
        for template in spec.templates:
            text = render(template, fields, name)
            assert text and "{" not in text and "}" not in text
        try:
            ex = src[i]
        except ValueError as e:  # a mock label that indexes no option
            assert name in PLAIN_INT_LABELS | RANDOM_ANSWER_KEY, e
            assert "is not an index into options" in str(e)
            continue
        checked += 1
        assert ex.inputs == (render(spec.templates[0], fields),)
        assert ex.id.startswith(f"{name}/{split}:")
        if spec.kind == "classification":
            assert len(ex.options) >= 2 and ex.target in ex.options
        elif spec.kind == "qa":
            assert ex.target == ex.answers[0] and all(ex.answers)
        else:
            assert ex.target and isinstance(ex.target, str)
    assert checked or name in PLAIN_INT_LABELS | RANDOM_ANSWER_KEY
    features = src.source.dataset_info.features  # a fixed verbalizer names every ClassLabel class
    if records.verbalizer and records.label_key in features.keys():
        label = features[records.label_key]
        assert isinstance(label, tfds.features.ClassLabel), name
        assert label.num_classes == len(records.verbalizer), name


def test_classification_options_follow_the_label(mocked):
    # Templates render {options}; a label outside them is an error (not verbalize's options[-1]).
    src = TfdsTaskSource("hellaswag", "validation")
    fields = src.fields(0)
    assert fields["options"] == " </s> ".join(fields["endings"])
    with pytest.raises(
        ValueError, match=r"hellaswag/validation record 0: label \d+ is not an index"
    ):
        src[0]  # mock labels are 0..254, mock endings 5..49 long
    assert len(TfdsTaskSource("sentiment140", "test")) == 0  # only polarity 0 and 4 are kept


# --- real prepared files -------------------------------------------------------------------------


def test_unlabelled_pairs_are_skipped_in_prepared_files(prepared_dir):
    src = TfdsTaskSource("snli", "validation", data_dir=prepared_dir, template=1)
    got = sorted((src[i].inputs[0], src[i].target) for i in range(len(src)))
    expected = [(0, "entailment"), (2, "contradiction"), (3, "neutral"), (5, "entailment")]
    assert got == sorted(
        (
            f'premise {k} é </s> Based on the paragraph above, can we conclude that "hypothesis '
            f'{k}"? </s> OPTIONS: </s> entailment </s> neutral </s> contradiction </s> TARGET:',
            target,
        )
        for k, target in expected
    )
    assert len(src) == 4 and src[3].id == f"snli/validation:{src.labelled[3]}"
    with pytest.raises(IndexError):
        src[4]
    assert "tensorflow" not in sys.modules


def test_questions_without_an_answer_are_skipped_in_prepared_files(prepared_dir):
    src = TfdsTaskSource("drop", "validation", data_dir=prepared_dir)
    got = sorted((ex.id, ex.target, ex.answers) for ex in (src[i] for i in range(len(src))))
    assert got == [("drop/validation:q1", "7", ("7",)), ("drop/validation:q2", "3", ("3", "three"))]
    ex = next(src[i] for i in range(len(src)) if src[i].id.endswith("q1"))
    assert ex.inputs == ("Answer based on context: </s> passage 1 </s> question 1? </s> TARGET:",)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tfds_name"),
    [("sst2", "glue/sst2:2.0.0"), ("boolq", "super_glue/boolq:1.0.2"), ("piqa", "piqa:1.0.0")],
)
def test_unprepared_task_says_how_to_prepare_it(tmp_path, name, tfds_name):
    # No files: glue's code exists (TFDS then wants TFRecords), super_glue's needs TensorFlow.
    with pytest.raises(FileNotFoundError) as e:
        TfdsTaskSource(name, "validation", data_dir=str(tmp_path))
    message = str(e.value)
    assert f"TFDS task {name!r}" in message and f"data_dir={str(tmp_path)!r}" in message
    assert f"tfds build {tfds_name} --file_format=array_record --data_dir={tmp_path}" in message


def test_manual_downloads_are_named_in_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build xsum:1.1.0 .* --manual_dir="):
        TfdsTaskSource("xsum", "validation", data_dir=str(tmp_path))


def test_unknown_task_split_or_template(mocked):
    with pytest.raises(ValueError, match=r"unknown TFDS task 'nope'; expected one of \[.*'mnli'"):
        TfdsTaskSource("nope", "train")
    with pytest.raises(ValueError, match=r"'rte' has splits \['train', 'validation'\], not 'test'"):
        TfdsTaskSource("rte", "test")
    with pytest.raises(ValueError, match="templates 0..2 .*, not 3"):
        TfdsTaskSource("rte", "train", template=3)


# --- the registry --------------------------------------------------------------------------------


def test_registry_templates_splits_and_documentation():
    assert len(TFDS_TASKS) >= 37
    for name in TFDS_TASKS:
        spec = task_spec(name)
        records = spec.records
        assert len(spec.templates) >= 3 and len(set(spec.templates)) == len(spec.templates), name
        assert spec.eval_templates == tuple(range(len(spec.templates)))[:5], name
        listed = [t for t in spec.templates if "OPTIONS:" in t and "{options}" not in t]
        for template in listed:  # options written out (the paper's SST-2 prompt) are the words
            words = template.split("OPTIONS: </s> ")[1].split(" </s> TARGET:")[0].split(" </s> ")
            assert sorted(words) == sorted(records.verbalizer), name
        row = f"  {name:<16}{records.tfds_name:<42}{'yes' if records.needs_tf else 'no':<5}"
        assert row in tfds_tasks.__doc__, f"the module docstring's table lacks {row!r}"
    with pytest.raises(ValueError, match="not 'builder\\[/config\\]:x.y.z'"):
        TfdsRecords("glue/sst2", {"validation": "validation"}, answers_key="a")
    sst2 = TfdsRecords("glue/sst2:2.0.0", {"validation": "validation"})
    with pytest.raises(ValueError, match="a qa task needs answers_key"):
        tfds_tasks.tfds_task("sst2_qa", sst2, ("x",), "qa", "misc")
    with pytest.raises(ValueError, match="a classification task needs a verbalizer"):
        tfds_tasks.tfds_task("sst2_any", sst2, ("x",), "classification", "sentiment")
