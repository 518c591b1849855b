"""The paper's language-only downstream datasets (PAPER.md §4.2), read from prepared TFDS files.

Each task is a TaskSpec of the task registry (data/tasks/registry.py: its prompt templates, kind
and FLAN cluster) whose `records` are a `TfdsRecords` (here: which TFDS builder, config and
version it reads, which of its splits count as train / validation / test, how its labels become
words); data/tasks/tfds_catalog.py registers them all, through `tfds_task`, which checks that
the two fit. `TfdsTaskSource` is random access over one split that turns each record into a
`TaskExample` (data/tasks/examples.py).
Template 0 is the paper's prompt (§4.1/§4.2: instruction, input, options and the "TARGET:" cue
all go to the encoder; for MNLI the §3.4 single-task prompt); the others are alternatives for
instruction tuning. `{options}` in a template is the example's options joined by " </s> ".
Records are read with `tfds.data_source(..., download=False)`: the data must already be
prepared (array_record) under `data_dir`, and reading it never imports TensorFlow, nor does
anything here.

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
import re
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

# The record format TFDS writes (tf.train.Example), as TFDS's own protobuf classes: no TensorFlow.
from tensorflow_datasets.proto import tf_example_pb2

from metalm_jax.data.tasks.examples import OPTIONS_SEP, TaskExample, render, verbalize
from metalm_jax.data.tasks.registry import (
    KINDS,
    SPLITS,
    TaskSpec,
    task_names,
    task_spec,
)
from metalm_jax.types import ConfigError

# The FLAN clusters of the paper's language tasks (PAPER.md §4.2).
FLAN_CLUSTERS = (
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
_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.-]+)?:\d+\.\d+\.\d+$")


@dataclasses.dataclass(frozen=True)
class TfdsRecords:
    """Where a TFDS task's records are and how a record becomes template fields and a target
    (the `records` of its TaskSpec; the templates, kind and cluster are the TaskSpec's own).

    Field names are the builder's features, nested ones joined by "/" ("answers/text"); `derive`
    adds fields computed from them (it must not fail on any record: a bad label becomes -1).
    """

    tfds_name: str  # "builder/config:version", pinned so prepared files are read without code
    splits: Mapping[str, str]  # our split ("train", "validation", "test") -> the TFDS split
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
        if "validation" not in self.splits or set(self.splits) - {*SPLITS}:
            problems.append("needs a 'validation' split (of train/validation/test)")
        if problems:
            raise ValueError(f"TfdsRecords {self.tfds_name}: {'; '.join(problems)}")

    def prepare_command(self, data_dir: str) -> str:
        manual = " --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES" if self.manual else ""
        command = f"tfds build {self.tfds_name} --file_format=array_record --data_dir={data_dir}"
        return command + manual


def tfds_task(name: str, records: TfdsRecords, templates, kind: str, cluster: str) -> TaskSpec:
    """The registry's record of a TFDS task, once its records are checked against its kind (a
    classification task needs label words or an options field, qa an answers field, ...)."""
    problems = []
    if kind not in KINDS or cluster not in FLAN_CLUSTERS:
        problems.append(f"kind {kind!r} / cluster {cluster!r} is not known")
    if not templates:
        problems.append("needs templates")
    if kind == "classification" and bool(records.verbalizer) == bool(records.options_key):
        problems.append("a classification task needs a verbalizer or an options_key (one)")
    if kind == "qa" and not records.answers_key:
        problems.append("a qa task needs answers_key")
    if kind == "generation" and not records.target_key:
        problems.append("a generation task needs target_key")
    if problems:
        raise ValueError(f"TFDS task {name} ({records.tfds_name}): {'; '.join(problems)}")
    return TaskSpec(name, open_tfds_task, cluster, kind, tuple(templates), records)


def tfds_task_names() -> list[str]:
    """The registered TFDS tasks."""
    return [n for n in task_names() if isinstance(task_spec(n).records, TfdsRecords)]


def open_tfds_task(task_cfg, split: str, data_dir, render_size: int, seed: int):
    """The opener of every TFDS task: its template by task.template_index (-1: one drawn per
    record), never a template string."""
    if task_cfg.template:
        raise ConfigError(
            f"task.template: TFDS task {task_cfg.name} takes one of its own templates "
            "(task.template_index), not a template string"
        )
    return TfdsTaskSource(
        task_cfg.name, split, data_dir, template=task_cfg.template_index, seed=seed
    )


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


def _task(name: str) -> TaskSpec:
    """The registered TFDS task `name` (its `records` a TfdsRecords)."""
    if name not in tfds_task_names():
        raise ValueError(f"unknown TFDS task {name!r}; expected one of {tfds_task_names()}")
    return task_spec(name)


def _open(name: str, records: TfdsRecords, split: str, data_dir: str | None, **kwargs):
    try:
        return tfds.data_source(
            records.tfds_name, split=records.splits[split], data_dir=data_dir, download=False,
            **kwargs,
        )  # fmt: skip
    except (
        tfds.core.DatasetNotFoundError,
        ImportError,
        NotImplementedError,
        FileNotFoundError,
    ) as e:
        # Unprepared: not found (no code, no files), builder code that needs TensorFlow, or
        # code without files (TFDS then looks for TFRecord files, which have no random access).
        where = data_dir or tfds.core.constants.DATA_DIR
        if records.needs_tf:
            tf = f"with TensorFlow installed, which this builder needs too ({records.needs_tf})"
        else:
            tf = "TFDS 4.9.10's tfds command imports TensorFlow; data/tasks/tfds_tasks.py says "
            tf += "how to prepare this one from Python without it"
        cause = str(e).splitlines()[0] if str(e) else ""
        raise FileNotFoundError(
            f"TFDS task {name!r}: no prepared {records.tfds_name} (array_record) under "
            f"data_dir={where!r}. Prepare it on a machine with network access ({tf}):\n"
            f"  {records.prepare_command(where)}\n({type(e).__name__}: {cause})"
        ) from e


class TfdsTaskSource:
    """Random access over one split of a registered TFDS task: `len(source)`, `source[i] ->
    TaskExample` (prompt `task.templates[template]`, or with template=-1 one drawn per record),
    `source.fields(i)` (the fields templates see, for other templates). `task` is its TaskSpec,
    `records` its TfdsRecords. In the splits named by `records.unlabelled_in`, records without a
    label are left out (indices then skip them: `labelled` maps them to records)."""

    def __init__(
        self, name: str, split: str, data_dir: str | None = None, template: int = 0, seed: int = 0
    ):
        self.task = _task(name)
        self.records = records = self.task.records
        if split not in records.splits:
            raise ValueError(
                f"TFDS task {name!r} has splits {sorted(records.splits)}, not {split!r} (a test "
                "split without labels is left out; see data/tasks/tfds_tasks.py)"
            )
        if not -1 <= template < len(self.task.templates):
            raise ValueError(
                f"TFDS task {name!r} has templates 0..{len(self.task.templates) - 1} (-1: one "
                f"drawn per example), not {template}"
            )
        self.name, self.split, self.template, self.seed = name, split, template, seed
        self.source = _open(name, records, split, data_dir)
        self.labelled = self._labelled(data_dir) if split in records.unlabelled_in else None

    def __len__(self) -> int:
        return len(self.source) if self.labelled is None else len(self.labelled)

    def _record(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(
                f"TFDS task {self.name}/{self.split}: index {i} out of range({len(self)})"
            )
        return int(i) if self.labelled is None else int(self.labelled[i])

    def _template(self, record: int) -> int:
        """template >= 0: that one; -1: one drawn per record (instruction tuning, PAPER.md
        §3.5), a fixed function of (seed, record)."""
        if self.template >= 0:
            return self.template
        rng = np.random.default_rng((self.seed, record))
        return int(rng.integers(len(self.task.templates)))

    def fields(self, i: int) -> dict:
        return self._complete(_flatten(self.source[self._record(i)]))

    def __getitem__(self, i: int) -> TaskExample:
        j = self._record(i)
        fields = self._complete(_flatten(self.source[j]))
        where = f"TFDS task {self.name}/{self.split} record {j}"
        own_id = fields[self.records.id_key] if self.records.id_key else j
        target, options, answers = self._target(fields, where)
        return TaskExample(
            id=f"{self.name}/{self.split}:{own_id}",
            inputs=(render(self.task.templates[self._template(j)], fields, where),),
            target=target,
            options=options,
            answers=answers,
        )

    def _options(self, fields: dict) -> tuple[str, ...]:
        records = self.records
        return records.verbalizer or tuple(str(o) for o in fields[records.options_key])

    def _complete(self, fields: dict) -> dict:
        if self.records.derive is not None:
            fields.update(self.records.derive(fields))
        if self.task.kind == "classification":
            fields["options"] = OPTIONS_SEP.join(self._options(fields))
        return fields

    def _target(self, fields: dict, where: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(target, options, answers), or _Unlabelled."""
        records, kind = self.records, self.task.kind
        if kind == "classification":
            options, label = self._options(fields), int(fields[records.label_key])
            if not 0 <= label < len(options):  # verbalize would read -1 as the last option
                raise _Unlabelled(f"{where}: label {label} is not an index into options {options}")
            return verbalize(label, options, where), options, ()
        if kind == "qa":
            answers = _unique(fields[records.answers_key])
            if not answers:
                raise _Unlabelled(f"{where}: no answer")
            return answers[0], (), answers
        target = str(fields[records.target_key])
        if not target:
            raise _Unlabelled(f"{where}: empty target")
        return target, (), _unique(fields[records.answers_key]) if records.answers_key else ()

    def _labelled(self, data_dir: str | None) -> np.ndarray:
        """int64[n]: the records with a label, from one batched pass over the raw records."""
        n = len(self.source)
        if n == 0:
            return np.zeros(0, np.int64)
        raw = _open(
            self.name,
            self.records,
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
