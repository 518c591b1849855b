"""Supervised tasks for finetuning and evaluation: examples, templates, and the task registry.

A task example (PAPER.md §4.1) is what the encoders read and what the decoder must say:

  inputs        one or more encoder inputs, each its own encoder segment: a string (through the
                text encoder) or an ImageInput (an image, with an optional text prefix read by
                the joint vision-language encoder). The instruction, the options and the cue
                ("TARGET:", "Label:", "Answer:") belong here, with the input (§4.1).
  decoder_text  optional decoder text after the inputs (no loss): zero-shot priming (Fig. 4c)
  target        the answer, decoder tokens followed by </s>; the loss covers exactly these
  options       the verbalized labels of a classification task (option scoring, exact match)
  answers       every acceptable answer (QA / VQA metrics); default (target,)

`render` fills a template string such as
"Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:" from named fields; a literal
`</s>` in a template is the paragraph separator of the paper's prompts and is kept as text (the
decoder's tokenizer maps it to its </s> id when it is a piece).

Sources (`open_task`): `jsonl` files, the bundled offline tasks (KJV book groups, KJV testament,
emoji VQA, emoji captions) and TFDS tasks (data/tfds_tasks.py). Each gives random access to the
examples of a split: `len(source)`, `source[i] -> TaskExample`.
"""

from __future__ import annotations

import dataclasses
import os
import string
from collections.abc import Mapping, Sequence

import numpy as np

from metalm_jax.data.corpora import json_objects


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """An image input: encoded image bytes (PNG/JPEG) or uint8[H, W, 3], plus the text prefix
    the joint VL encoder reads with it (PAPER.md §4.3: "Question: ... Answer:")."""

    image: object
    prefix: str = ""
    record_id: str = ""


@dataclasses.dataclass(frozen=True)
class TaskExample:
    id: str
    inputs: tuple  # str | ImageInput, each its own encoder segment
    target: str
    options: tuple[str, ...] = ()
    decoder_text: str = ""
    answers: tuple[str, ...] = ()

    @property
    def references(self) -> tuple[str, ...]:
        return self.answers or (self.target,)


def render(template: str, fields: Mapping, where: str = "template") -> str:
    """`template` with `{name}` filled from `fields`; a missing field is a ValueError naming it
    and the fields there are."""
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(
            f"{where}: {template!r} needs field(s) {missing}; the example has {sorted(fields)}"
        )
    return template.format(**{n: fields[n] for n in names})


def verbalize(label, verbalizer: Sequence[str] | Mapping | None, where: str) -> str:
    """A label (int index or str) -> its word, through a list or dict verbalizer (or as is)."""
    if verbalizer is None or len(verbalizer) == 0:
        return str(label)
    if isinstance(verbalizer, Mapping):
        key = label if label in verbalizer else str(label)
        if key not in verbalizer:
            raise ValueError(
                f"{where}: label {label!r} is not in the verbalizer {dict(verbalizer)}"
            )
        return str(verbalizer[key])
    try:
        return str(verbalizer[int(label)])
    except (ValueError, IndexError):
        raise ValueError(
            f"{where}: label {label!r} is not an index into the verbalizer {list(verbalizer)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# JSONL files


class JsonlTask:
    """A JSONL file of examples: `{"input": ..., "target": ...}` (input a string or a list of
    strings, each its own encoder segment; optional "options", "answers", "decoder_text"), or
    named fields rendered by `input_template` (and `target_template`, or a `label_field` mapped
    by `verbalizer`; then the options are the verbalizer's words)."""

    def __init__(
        self,
        path: str,
        input_template: str = "",
        target_template: str = "",
        label_field: str = "",
        verbalizer=(),
        options=(),
    ):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"task file {path!r} does not exist")
        self.path = path
        self.examples = []
        verbalizer = dict(verbalizer) if isinstance(verbalizer, Mapping) else list(verbalizer)
        for lineno, obj in json_objects(path):
            self.examples.append(
                self._example(
                    obj, f"{path}:{lineno}", input_template, target_template, label_field,
                    verbalizer, options,
                )
            )  # fmt: skip
        if not self.examples:
            raise ValueError(f"task file {path}: no examples")

    @staticmethod
    def _example(obj, where, input_template, target_template, label_field, verbalizer, options):
        if input_template:
            inputs = (render(input_template, obj, where),)
        else:
            if "input" not in obj:
                raise ValueError(
                    f"{where}: expected key 'input' (or set the task's input_template)"
                )
            inp = obj["input"]
            inputs = tuple(inp) if isinstance(inp, list) else (inp,)
            if not all(isinstance(x, str) for x in inputs):
                raise ValueError(f"{where}: 'input' must be a string or a list of strings")
        opts = tuple(obj.get("options", options))
        if label_field:
            if label_field not in obj:
                raise ValueError(f"{where}: expected the label field {label_field!r}")
            target = verbalize(obj[label_field], verbalizer, where)
            if not opts and verbalizer:
                opts = tuple(verbalizer.values() if isinstance(verbalizer, dict) else verbalizer)
        elif target_template:
            target = render(target_template, obj, where)
        else:
            if "target" not in obj:
                raise ValueError(f"{where}: expected key 'target' (or a label_field)")
            target = obj["target"]
        if not isinstance(target, str):
            raise ValueError(f"{where}: the target must be a string, got {type(target).__name__}")
        answers = obj.get("answers", ())
        if isinstance(answers, str):
            answers = (answers,)
        return TaskExample(
            id=obj.get("id", where),
            inputs=inputs,
            target=target,
            options=tuple(str(o) for o in opts),
            decoder_text=str(obj.get("decoder_text", "")),
            answers=tuple(str(a) for a in answers),
        )

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i: int) -> TaskExample:
        return self.examples[i]


def shuffled_indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


KJV_TASKS = ("kjv_books", "kjv_testament", "kjv_book", "kjv_completion", "kjv_next_verse")
OFFLINE_TASKS = (*KJV_TASKS, "emoji_vqa", "emoji_captions")
TEMPLATED_TASKS = KJV_TASKS  # offline tasks with several templates


def _is_tfds(name: str) -> bool:
    from metalm_jax.data.tfds_task_registry import TFDS_TASKS

    return name in TFDS_TASKS


def open_task(
    task_cfg, split: str, data_dir: str | None = None, render_size: int = 64, seed: int = 0
):
    """Random-access TaskExamples of the configured task (`task` config section) for `split`
    (train | validation | test). task.template_index=-1 draws one of the task's templates per
    example (a fixed function of `seed` and the example)."""
    name = task_cfg.name
    if task_cfg.template_index == -1 and name not in TEMPLATED_TASKS and not _is_tfds(name):
        raise ValueError(
            f"task.template_index=-1 (a template drawn per example): task {name} has one template"
        )
    if name == "jsonl":
        path = task_cfg.file if split == "train" else task_cfg.validation_file
        if not path:
            key = "task.file" if split == "train" else "task.validation_file"
            raise ValueError(f"task.name=jsonl needs {key} for the {split} split")
        return JsonlTask(
            path,
            input_template=task_cfg.input_template,
            target_template=task_cfg.target_template,
            label_field=task_cfg.label_field,
            verbalizer=task_cfg.verbalizer,
        )
    if name in KJV_TASKS:
        from metalm_jax.data import offline_tasks

        templates = offline_tasks.TEMPLATES[name]
        if task_cfg.template:
            template = task_cfg.template
        elif task_cfg.template_index == -1:  # one drawn per example (instruction tuning)
            template = templates
        else:
            template = _nth_template(templates, task_cfg.template_index, name)
        return offline_tasks.kjv_task(
            name, split, template=template, seed=seed, words=tuple(task_cfg.verbalizer)
        )
    if name == "emoji_vqa":
        from metalm_jax.data import offline_tasks

        return offline_tasks.emoji_vqa(
            split, render_size=render_size, template=task_cfg.prompt, data_dir=data_dir
        )
    if name == "emoji_captions":
        from metalm_jax.data import offline_tasks

        return offline_tasks.emoji_captions(
            split, render_size=render_size, prefix=task_cfg.caption_prefix, data_dir=data_dir
        )
    from metalm_jax.data import tfds_tasks

    if name in tfds_tasks.TFDS_TASKS:
        if task_cfg.template:
            raise ValueError(
                f"task.template: TFDS task {name} takes one of its own templates "
                "(task.template_index), not a template string"
            )
        return tfds_tasks.TfdsTaskSource(
            name, split, data_dir, template=task_cfg.template_index, seed=seed
        )
    raise ValueError(
        f"task.name: unknown task {name!r}; expected jsonl, one of {list(OFFLINE_TASKS)} or a "
        f"TFDS task ({', '.join(sorted(tfds_tasks.TFDS_TASKS))})"
    )


def _nth_template(templates, i: int, name: str) -> str:
    templates = list(templates)
    if not 0 <= i < len(templates):
        raise ValueError(f"task.template_index={i}: task {name} has {len(templates)} templates")
    return templates[i]
