"""What a supervised task gives: its examples (`TaskExample`) and the templates that make them.

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

A task's templates are strings, or `Template`s when one is marked "turned around" (training
only). Every task is opened by name through the registry (data/tasks/registry.py: `open_task`),
which gives random access to the examples of a split: `len(source)`, `source[i] ->
TaskExample`.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping, Sequence

import numpy as np

OPTIONS_SEP = " </s> "  # between the options a template's {options} lists


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


@dataclasses.dataclass(frozen=True)
class Template:
    """A prompt template marked as FLAN's "turned around" form (PAPER.md §4.2), which asks for a
    task's input given its answer (a verse from its label, the start of a verse from its end).
    Its examples have no options. Only for training: evaluation uses a task's
    `TaskSpec.eval_templates`, which leave these out. Plain strings are the normal templates."""

    text: str
    turned: bool = False


def is_turned(template: str | Template) -> bool:
    return isinstance(template, Template) and template.turned


def shuffled_indices(n: int, seed: int) -> np.ndarray:
    """A fixed random order of a split's `n` examples: the subsets evaluations and caps take."""
    return np.random.default_rng(seed).permutation(n)
