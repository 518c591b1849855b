"""The `jsonl` task: a user's own examples in JSONL files (task.file, task.validation_file).

Its cluster is "jsonl" and it has no kind (the `task` evaluator's metric "auto" decides from the
examples); a mixture entry may give both (`cluster`, `kind`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from metalm_jax.data.corpora.text import json_objects
from metalm_jax.data.tasks.examples import TaskExample, render, verbalize
from metalm_jax.data.tasks.registry import TaskSpec, register
from metalm_jax.types import ConfigError


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


def _open(task_cfg, split: str, data_dir, render_size: int, seed: int) -> JsonlTask:
    path = task_cfg.file if split == "train" else task_cfg.validation_file
    if not path:
        key = "task.file" if split == "train" else "task.validation_file"
        raise ConfigError(f"task.name=jsonl needs {key} for the {split} split")
    return JsonlTask(
        path,
        input_template=task_cfg.input_template,
        target_template=task_cfg.target_template,
        label_field=task_cfg.label_field,
        verbalizer=task_cfg.verbalizer,
    )


register(TaskSpec("jsonl", _open, cluster="jsonl", kind=""))
