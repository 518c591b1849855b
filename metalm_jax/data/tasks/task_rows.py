"""Task examples -> row pieces -> packed Batch rows, and the grain pipeline for finetuning.

    task source (random access, data/tasks/registry.open_task) -> `example_stream`: [process
    shard] -> shuffle / repeat -> tokenize + preprocess images (`ExampleEncoder.pieces`) -> pack
    examples into rows (`TaskPackIterDataset`: checkpointable, one example pending at most)
    -> batch (data/feed/pipeline.py)

An example's text inputs go to the text encoder (Enc pieces), or, for a decoder-only model (the
GPT baseline), become decoder text in the same place; image inputs go to the vision encoder with
their prefix; the target is decoder tokens + </s> with the loss on exactly those tokens
(data/rows.py). A literal `</s>` in a prompt is the paper's separator: the </s> id.

Inputs longer than task.max_input_tokens lose tokens from their middle, so both the start (the
instruction) and the end (the cue, e.g. "Label:") stay; targets are cut to
task.max_target_tokens. An input that lists its options (the paper's multiple-choice form,
"... OPTIONS: </s> a </s> b </s> TARGET:") keeps every option and the cue whole and is cut only
before them (`ExampleEncoder.input_ids`); a template whose options and cue leave too little of
the budget for the rest is an error naming the task and the template, not a silent cut (a
model that never sees an option cannot pick it).
"""

from __future__ import annotations

import grain

from metalm_jax.data import images as imlib
from metalm_jax.data.rows import DoesNotFit, Enc, Image, Target, Text
from metalm_jax.data.tasks.examples import OPTIONS_SEP, ImageInput, TaskExample
from metalm_jax.data.tokenizer import Tokenizer
from metalm_jax.types import ConfigError

SEPARATOR = "</s>"
# An input that lists its options keeps at least 1/PASSAGE_SHARE of task.max_input_tokens for
# what comes before them (the instruction and the passage): less, and the options are most of
# what the encoder reads.
PASSAGE_SHARE = 4


def encode_prompt(tok: Tokenizer, text: str) -> list[int]:
    """Text ids where each literal "</s>" is the tokenizer's </s> id (`tok.eos`: tokenizers
    never produce control ids from text)."""
    parts = text.split(SEPARATOR)
    ids: list[int] = []
    for i, part in enumerate(parts):
        if i:
            ids.append(tok.eos)
        if part.strip():
            ids += tok.encode(part.strip())
    return ids


def cut_middle(ids, max_len: int, tail: int = 12) -> list[int]:
    """`ids` cut to `max_len` by dropping tokens from the middle (the last `tail` stay)."""
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    tail = min(tail, max_len // 4)
    return ids[: max_len - tail] + (ids[-tail:] if tail else [])


def _template_named(task_cfg) -> str:
    """How an error names the task's template: task.template, task.input_template (JSONL), or
    task.template_index with its text (-1: one drawn per example)."""
    if task_cfg.get("template"):
        return f"task.template {task_cfg.template!r}"
    if task_cfg.get("input_template"):
        return f"task.input_template {task_cfg.input_template!r}"
    index = int(task_cfg.get("template_index", 0))
    if index == -1:
        return "one of its templates (task.template_index=-1, drawn per example)"
    from metalm_jax.data.tasks.registry import task_spec

    try:
        templates = task_spec(task_cfg.name).templates
    except (KeyError, ValueError):
        templates = ()
    if not 0 <= index < len(templates):
        return f"task.template_index={index}"
    text = getattr(templates[index], "text", templates[index])
    return f"task.template_index={index} ({text!r})"


class ExampleEncoder:
    """TaskExample -> row pieces, for one model: text inputs through the text encoder if it has
    one (else as decoder text), images through its ImageLayout."""

    def __init__(self, tok, task_cfg, *, text_encoder: bool, layout=None, augment=False):
        self.tok = tok
        self.max_input = int(task_cfg.max_input_tokens)
        self.max_target = int(task_cfg.max_target_tokens)
        self.text_encoder = text_encoder
        self.layout = layout
        self.augment = augment
        self.task_name = task_cfg.name
        self.template_named = _template_named(task_cfg)

    def input_pieces(self, ex: TaskExample, rng=None) -> list:
        pieces = []
        for x in ex.inputs:
            if isinstance(x, ImageInput):
                lay = self.layout
                if lay is None:
                    raise ValueError(
                        f"task example {ex.id} has an image input: the model needs a vision "
                        "encoder (model.vision.enabled and images.enabled)"
                    )
                pixels = imlib.preprocess(
                    x.image,
                    lay.image_size,
                    record_id=x.record_id or ex.id,
                    augment=self.augment and rng is not None,
                    rng=rng,
                )
                prefix = cut_middle(encode_prompt(self.tok, x.prefix), lay.prefix_len)
                pieces.append(Image(pixels, prefix))
            else:
                ids = self.input_ids(ex, x)
                pieces.append(Enc(ids) if self.text_encoder else Text(ids))
        if ex.decoder_text:
            pieces.append(Text(encode_prompt(self.tok, ex.decoder_text)))
        return pieces

    def input_ids(self, ex: TaskExample, text: str) -> list[int]:
        """A text input's ids within task.max_input_tokens: cut in the middle; when it lists
        the example's options, every option and what follows them (the cue) stay whole and only
        the part before them is cut (keeping its start and its end, "OPTIONS:")."""
        ids = encode_prompt(self.tok, text)
        if len(ids) <= self.max_input:
            return ids
        listed = OPTIONS_SEP.join(ex.options) if len(ex.options) > 1 else ""
        at = text.find(listed) if listed else -1
        if at < 0:
            return cut_middle(ids, self.max_input)
        # split at the </s> before the first option: both halves tokenize as in the whole
        kept = encode_prompt(self.tok, text[at:])
        room = self.max_input - len(kept)
        need = max(1, self.max_input // PASSAGE_SHARE)
        if room < need:
            raise ConfigError(
                f"task {self.task_name}, {self.template_named}: its {len(ex.options)} listed "
                f"options and cue take {len(kept)} of task.max_input_tokens={self.max_input} "
                f"tokens, leaving {max(room, 0)} for the rest (at least {need}): use a template "
                "without {options}, fewer or shorter options (task.verbalizer), or a larger "
                "task.max_input_tokens (within the encoder's trained positions)"
            )
        return cut_middle(encode_prompt(self.tok, text[:at]), room) + kept

    def target_ids(self, text: str) -> list[int]:
        return encode_prompt(self.tok, text)[: self.max_target] + [self.tok.eos]

    def pieces(self, ex: TaskExample, rng=None) -> list:
        """The training example: inputs, then Target(target </s>)."""
        return self.input_pieces(ex, rng) + [Target(self.target_ids(ex.target))]


class _TaskPackIterator(grain.DatasetIterator):
    """Packs piece lists into rows; state = parent state before the pending example (if any)."""

    def __init__(self, parent, make_builder, pack: bool):
        super().__init__(parent)
        self._state = parent.get_state()
        self._make = make_builder
        self._pack = pack
        self.pending = None

    def __next__(self):
        builder = self._make()
        while True:
            if self.pending is None:
                self._state = self._parent.get_state()
                try:
                    self.pending = next(self._parent)
                except StopIteration:
                    if builder.empty:
                        raise
                    break
            ex_id, pieces = self.pending
            try:
                added = builder.add(pieces)
            except DoesNotFit as e:
                raise DoesNotFit(
                    f"task example {ex_id}: {e}; raise data.seq_len / spans.enc_length or lower "
                    "task.max_input_tokens / task.max_target_tokens"
                ) from None
            if not added:
                break
            self.pending = None
            if not self._pack:
                break
        if self.pending is None:
            self._state = self._parent.get_state()
        return builder.row()

    def get_state(self):
        return {"parent": self._state, "pending": self.pending is not None}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._state = state["parent"]
        self.pending = next(self._parent) if state["pending"] else None


class TaskPackIterDataset(grain.IterDataset):
    """Rows of packed examples from an IterDataset of (example id, pieces)."""

    def __init__(self, parent, make_builder, pack: bool = True):
        super().__init__(parent)
        self._make = make_builder
        self._pack = pack

    def __iter__(self):
        return _TaskPackIterator(self._parent.__iter__(), self._make, self._pack)


def example_stream(source, encoder: ExampleEncoder, shard, seed, name: str = "task"):
    """IterDataset of (example id, pieces) from a random-access `source` of TaskExamples, this
    process's share: shuffled and repeated forever when `seed` is given, else one pass."""
    ds = grain.MapDataset.source(source)
    index, count = shard
    ds = ds[index::count]
    if len(ds) == 0:
        raise ValueError(f"task {name}: process {index} of {count} gets no examples")
    if seed is not None:
        ds = ds.shuffle(seed=seed).repeat(None)
        ds = ds.random_map(lambda ex, rng: (ex.id, encoder.pieces(ex, rng)), seed=seed + 1)
    else:
        ds = ds.map(lambda ex: (ex.id, encoder.pieces(ex)))
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=32))
