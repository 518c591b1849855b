"""The one task registry: every supervised task by name, with what the rest of the code asks of it.

A task module registers one `TaskSpec` per task when it is imported: how a split's examples are
opened, the task's FLAN-style cluster (PAPER.md §4.2), its kind (how it is scored) and its
prompt templates. `open_task` (the `task` config section -> examples), the mixtures
(data/tasks/mixture.py) and the multitask evaluator (eval/multitask_eval.py) read only this.

This module imports no task module; the task modules import it, and the package
(data/tasks/__init__.py) imports every task module, so whatever imports a module under
data/tasks/ finds every task registered:

  data/tasks/jsonl.py         jsonl: the user's JSONL files
  data/tasks/kjv.py           kjv_books, kjv_testament, kjv_book, kjv_completion, kjv_next_verse
  data/tasks/emoji.py         emoji_vqa, emoji_captions
  data/tasks/tfds_catalog.py  the paper's TFDS tasks (mnli, boolq, squad_v1, ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from metalm_jax.data.tasks.examples import Template, is_turned
from metalm_jax.types import ConfigError

KINDS = ("classification", "qa", "generation")
SPLITS = ("train", "validation", "test")
EVAL_TEMPLATES = 5  # FLAN (PAPER.md §4.2): a task is evaluated with its first 5 templates


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task as every reader of the registry sees it.

    opener     (task_cfg, split, data_dir, render_size, seed) -> the random-access TaskExamples
               of `split`; task_cfg is the `task` config section (for a mixture, the entry's)
    cluster    the FLAN-style cluster: the per-cluster tables group by it, and instruction
               tuning holds a whole cluster out (configs/instruct_kjv.py)
    kind       how it is scored (eval/multitask_eval.py): classification (exact match of the
               free generation), qa (token F1), generation (ROUGE-L, caption metrics); "" when
               its examples decide (a JSONL file: the `task` evaluator's metric "auto")
    templates  its prompt templates, 0 the default (task.template_index picks one, -1 draws one
               per example); () when the prompt is a config string (task.prompt, ...)
    records    what its opener reads besides the config, for tasks that keep that in the
               registry (a TFDS task: data/tasks/tfds_tasks.TfdsRecords); else None
    inputs     what its inputs are: "text" (read by the text encoder, so bounded by the
               encoder positions pretraining trained: training/finetune.py) or "image" (an image
               with a text prefix, read by the vision encoder)
    """

    name: str
    opener: Callable[..., Sequence]
    cluster: str
    kind: str
    templates: tuple[str | Template, ...] = ()
    records: object = None
    inputs: str = "text"

    def __post_init__(self):
        if self.inputs not in ("text", "image"):
            raise ValueError(f"TaskSpec {self.name!r}: inputs {self.inputs!r}: text | image")
        if not self.name or not self.cluster or self.kind not in (*KINDS, ""):
            raise ValueError(
                f"TaskSpec {self.name!r}: needs a name, a cluster and a kind in {KINDS} (or ''), "
                f"got cluster {self.cluster!r}, kind {self.kind!r}"
            )

    @property
    def eval_templates(self) -> tuple[int, ...]:
        """The template indices evaluation uses, in order: the first EVAL_TEMPLATES that are not
        turned around (`Template.turned`: training only); (0,) for a task with one prompt."""
        normal = [i for i, t in enumerate(self.templates) if not is_turned(t)]
        return tuple(normal[:EVAL_TEMPLATES]) or (0,)


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Adds a task; its module calls this once when imported (a name taken twice is a bug)."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    _TASKS[spec.name] = spec
    return spec


def task_names() -> tuple[str, ...]:
    return tuple(sorted(_TASKS))


def task_spec(name: str) -> TaskSpec:
    """The registered task `name`, or a ConfigError naming every task there is."""
    if name not in _TASKS:
        raise ConfigError(
            f"task.name: unknown task {name!r}; expected one of {', '.join(task_names())} (or "
            "mixture, with task.mixture)"
        )
    return _TASKS[name]


def open_task(
    task_cfg, split: str, data_dir: str | None = None, render_size: int = 64, seed: int = 0
):
    """Random-access TaskExamples of the configured task (`task` config section) for `split`
    (train | validation | test). task.template_index=-1 draws one of the task's templates per
    example (a fixed function of `seed` and the example)."""
    spec = task_spec(task_cfg.name)
    if task_cfg.template_index == -1 and len(spec.templates) < 2:
        raise ConfigError(
            f"task.template_index=-1 (a template drawn per example): task {spec.name} has one "
            "template"
        )
    return spec.opener(task_cfg, split, data_dir, render_size, seed)


def nth_template(spec: TaskSpec, i: int) -> str | Template:
    """Template `i` of a task (task.template_index), or a ConfigError saying how many it has."""
    if not 0 <= i < len(spec.templates):
        raise ConfigError(
            f"task.template_index={i}: task {spec.name} has {len(spec.templates)} templates"
        )
    return spec.templates[i]
