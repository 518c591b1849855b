"""The grain pipeline: corpus documents -> tokenize -> pack -> semi-causal spans -> batches.

The streams a run reads (`train_iterator`, `eval_sets`; and the run's tokenizer) are built here,
on top of data's three concerns: text pretraining rows from a corpus (data/corpora/text.py,
packed by data/pretrain/packed_rows.py, spans by data/spans.py), mixed with image-text rows
(data/feed/vl_pipeline.py) when the model reads images, or supervised task rows (data/tasks/: one
task or a mixture) when task.name is set. Nothing in those imports this module.

Training (`train_iterator`): the split is sharded per process (`process_index::process_count`),
shuffled with the config seed and re-shuffled every epoch, repeated forever; `data.open_documents`
documents are packed at once and each row is drawn at random among them
(data/pretrain/packed_rows.py), so the rows of one long document are spread out instead of
filling consecutive batches. Packing, the draws and span sampling are deterministic functions of
that order and of the seed. A document is tokenized once and kept (`TokenizedDocuments`, up to
CACHE_TOKENS tokens per process), so later epochs of a corpus that fits are neither read nor
tokenized again. The iterator's state is a small JSON dict (saved in every checkpoint by grain's
Orbax handler), so a
resumed run yields exactly the batch the interrupted run would have yielded next, on any number
of devices; with another number of processes the shards differ and the iterators start afresh
(checkpoint.py).

Evaluation (`eval_batches`): the validation split in file order, packed once, spans sampled with
a fixed seed, the last batch padded with empty rows (loss weight 0); cached in memory so every
evaluation scores exactly the same tokens.

Prepared data (`data.prepared_dir`, written by `python -m metalm_jax.prepare`:
data/feed/prepare.py): the rows are packed already, so training reads them from ArrayRecord
shards by index (`prepared_batches`, a MapDataset whose element s is step s's batch: the row
order is a pure function of the seed, the step and the process shard,
data/pretrain/prepared_rows.py) and only spans are drawn here; evaluation reads the prepared
validation rows in order. The manifest must match the config's data keys and the run's tokenizer
(data/feed/prepared.py).

What the rows look like for the model (span config, span encoding, image layout) comes in as a
data/rows.RowFormat derived once at the top of the run (model/build.derive): this module reads
the data sections of the config, never the model section.
"""

from __future__ import annotations

import os
import threading

import grain
import numpy as np
from etils import epath

from metalm_jax import paths
from metalm_jax.data import tokenizer
from metalm_jax.data.corpora.text import decode_example, load_split, make_builder
from metalm_jax.data.feed import prepared, vl_pipeline
from metalm_jax.data.pretrain.packed_rows import PackedRows
from metalm_jax.data.pretrain.prepared_rows import (
    ProcessShare,
    StepIterator,
    auto_workers,
    decode_row,
    mix_pattern,
)
from metalm_jax.data.rows import ImageLayout, RowFormat, empty_image_fields
from metalm_jax.data.spans import semi_causal_example
from metalm_jax.data.tasks.mixture import mixture_eval_examples, mixture_train_rows
from metalm_jax.data.tasks.registry import open_task
from metalm_jax.data.tasks.task_rows import ExampleEncoder, TaskPackIterDataset
from metalm_jax.data.tokenizer import JsonTokenizer, Tokenizer
from metalm_jax.types import ConfigError, DataError

# Tokens of the training documents one process keeps tokenized in memory (int32: 256 MiB, about
# as much again in per-sentence array overhead): the whole of a small corpus (the bundled KJV
# holds about 1M tokens), the start of a large one.
CACHE_TOKENS = 64 * 2**20


def build_tokenizer(cfg, workdir: str) -> Tokenizer | JsonTokenizer:
    """The run's decoder tokenizer (data/tokenizer.for_run): cfg.data.tokenizer_path or the
    tokenizer.json of an hf_gpt2 `init` source, else the workdir's saved one (with
    data.prepared_dir: the prepared rows' tokenizer, copied there first), else a SentencePiece
    trained on `train`."""

    def texts():  # read only when a SentencePiece is trained (prepared data: never)
        builder = make_builder(cfg.data, cfg.data.tfds_data_dir or None)
        src = load_split(builder, "train")
        for i in range(len(src)):
            yield from (p for p in decode_example(src[i]) if p.strip())
        if cfg.images.enabled:
            yield from vl_pipeline.captions(cfg)

    path = tokenizer.configured_path(cfg.data.tokenizer_path, cfg.init)
    if cfg.data.prepared_dir and not path:  # the prepared rows' tokenizer, kept in the workdir
        name = prepared.read_manifest(cfg.data.prepared_dir)["tokenizer"]["file"]
        saved = os.fspath(epath.Path(workdir) / name)
        if not epath.Path(saved).exists():
            paths.copy_file(prepared.path(cfg.data.prepared_dir, name), saved)
    return tokenizer.for_run(workdir, path, texts, cfg.data.vocab_size)


def _documents(cfg, split: str, tok: Tokenizer, shard: tuple[int, int], seed: int | None):
    builder = make_builder(cfg.data, cfg.data.tfds_data_dir or None)
    ds = grain.MapDataset.source(load_split(builder, split))
    index, count = shard
    ds = ds[index::count]
    if len(ds) == 0:
        raise DataError(
            f"{split}: process {index} of {count} gets no documents (the split has fewer "
            f"documents than processes): add documents, or raise data.validation_fraction"
        )
    encode = lambda ex: tok.encode_document(decode_example(ex))
    if seed is None:  # evaluation: one pass, nothing to cache
        return ds.map(encode)
    return TokenizedDocuments(ds, encode).shuffle(seed=seed).repeat(None)


class TokenizedDocuments(grain.MapDataset):
    """`encode(parent[i])` (a tokenized document), kept in memory after its first use while the
    kept documents hold fewer than `max_tokens` tokens: from the second epoch on, a corpus that
    fits is neither read nor tokenized again (issue 12 §4: tokenization was a third of the
    text pipeline's time). The documents are the ones `parent.map(encode)` gives, in the same
    order wherever it is shuffled and repeated; nothing downstream writes into them."""

    def __init__(self, parent: grain.MapDataset, encode, max_tokens: int = CACHE_TOKENS):
        super().__init__(parent)
        self._encode = encode
        self._max_tokens = max_tokens
        self._cache: dict[int, list[np.ndarray]] = {}
        self._tokens = 0
        self._lock = threading.Lock()  # grain reads ahead on several threads

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        key = index % len(self._parent)  # grain's shuffle asks for index + epoch * length
        doc = self._cache.get(key)
        if doc is None:
            doc = self._encode(self._parent[key])
            n = sum(len(s) for s in doc)
            with self._lock:
                if key not in self._cache and self._tokens + n <= self._max_tokens:
                    self._cache[key] = doc
                    self._tokens += n
        return doc

    def __str__(self) -> str:
        return f"TokenizedDocuments(max_tokens={self._max_tokens})"


def _stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _with_images(layout: ImageLayout | None):
    """Text rows get empty image fields when the batch also carries images."""
    if layout is None:
        return lambda row: row
    empty = empty_image_fields(layout)
    return lambda row: {**row, **empty}


def text_rows(cfg, tok: Tokenizer, shard, fmt: RowFormat):
    """Infinite IterDataset of semi-causal text Batch rows."""
    seed = int(cfg.data.seed)
    spans, encoding = fmt.spans, fmt.encoding
    ds = PackedRows(
        _documents(cfg, "train", tok, shard, seed),
        cfg.data.seq_len,
        tok.ids,
        open_docs=int(cfg.data.open_documents),
        seed=seed + 6,
        read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=64),
    )
    ds = ds.random_map(
        lambda row, rng: semi_causal_example(row, rng, spans, encoding), seed=seed + 1
    )
    return ds.map(_with_images(fmt.layout))


def task_source(cfg, split: str):
    """The configured task's examples of `split` (task.train_split / task.validation_split)."""
    name = cfg.task.train_split if split == "train" else cfg.task.validation_split
    return open_task(
        cfg.task, name, cfg.data.tfds_data_dir or None, cfg.images.render_size, cfg.data.seed
    )


def example_encoder(cfg, tok: Tokenizer, fmt: RowFormat, augment: bool = False, task=None):
    """The ExampleEncoder of this model for `task` (a task section; default cfg.task)."""
    return ExampleEncoder(
        tok,
        task if task is not None else cfg.task,
        text_encoder=fmt.text_encoder,
        layout=fmt.layout,
        augment=augment,
    )


def task_train_rows(cfg, tok: Tokenizer, shard, fmt: RowFormat):
    """Infinite IterDataset of packed supervised task rows (finetuning; a mixture of tasks
    with task.name=mixture, data/tasks/mixture.py)."""
    augment = bool(cfg.images.augment)
    make = lambda t: example_encoder(cfg, tok, fmt, augment, task=t)
    return mixture_train_rows(cfg, tok, shard, fmt, make)


def task_eval_rows(cfg, tok: Tokenizer, fmt: RowFormat, shard=(0, 1)) -> list[dict]:
    """Fixed validation rows: task.eval_examples examples (a fixed random sample, shared by
    the tasks of a mixture), packed."""
    pairs = [
        (ex.id, example_encoder(cfg, tok, fmt, task=t).pieces(ex))
        for t, ex in mixture_eval_examples(cfg)
    ]
    ds = grain.MapDataset.source(pairs)[shard[0] :: shard[1]].to_iter_dataset()
    return list(TaskPackIterDataset(ds, fmt.builder, bool(cfg.task.pack)))


def train_iterator(cfg, tok: Tokenizer, batch_size: int, fmt: RowFormat, shard=(0, 1)):
    """Infinite, checkpointable iterator of per-process batches (dicts of numpy arrays).

    With `task.name` set: supervised task rows (finetuning). Otherwise semi-causal text rows;
    with an ImageLayout (fmt.layout), text rows and image-text rows are mixed at
    images.text_ratio.
    """
    workers = int(cfg.data.workers)
    if workers > 0 and not cfg.data.prepared_dir:
        raise ConfigError(
            f"data.workers={workers}: worker processes read prepared rows only "
            "(data.prepared_dir, written by python -m metalm_jax.prepare); set data.workers=0 "
            "or -1, or prepare the corpus first"
        )
    if cfg.task.name:
        ds = task_train_rows(cfg, tok, shard, fmt)
        return iter(ds.batch(batch_size, drop_remainder=True, batch_fn=_stack))
    if cfg.data.prepared_dir:
        options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
        workers = auto_workers() if workers < 0 else workers
        batches = prepared_batches(cfg, tok, batch_size, fmt, shard)
        return StepIterator(batches, options, workers=workers)
    ds = text_rows(cfg, tok, shard, fmt)
    layout = fmt.layout
    if layout is not None:
        ratio = float(cfg.images.text_ratio)
        pairs = vl_pipeline.image_rows(cfg, tok, layout, shard, int(cfg.data.seed))
        if ratio <= 0:
            ds = pairs
        elif ratio < 1:
            ds = grain.IterDataset.mix([ds, pairs], weights=[ratio, 1.0 - ratio])
    return iter(ds.batch(batch_size, drop_remainder=True, batch_fn=_stack))


def _prepared(cfg, tok, fmt: RowFormat, split: str):
    """The checked sources of a prepared split (data.prepared_dir; data/feed/prepared.py): the
    text rows, and with an ImageLayout the image-text rows too."""
    if cfg.task.name:
        raise ConfigError(
            f"data.prepared_dir holds pretraining rows; task.name={cfg.task.name!r} is not read "
            "from prepared data: unset data.prepared_dir"
        )
    out = cfg.data.prepared_dir
    manifest = prepared.read_manifest(out)
    prepared.check_manifest(cfg, tok, manifest, fmt.layout)
    text = prepared.split_source(out, manifest, split)
    if fmt.layout is None:
        return (text,)
    return text, prepared.split_source(out, manifest, prepared.IMAGE_SPLIT[split])


def prepared_batches(cfg, tok, batch_size: int, fmt: RowFormat, shard=(0, 1)):
    """MapDataset of one process's batches of prepared rows: element s is the batch of step s,
    process `shard[0]`'s share (of `shard[1]`) of global batch s (data/pretrain/prepared_rows.py:
    a pure function of data.seed, the step and the shard); spans, prefix lengths and image
    crops seeded by (seed, epoch, row). A VL config mixes in image-text rows at
    images.text_ratio."""
    sources = _prepared(cfg, tok, fmt, "train")
    seed = int(cfg.data.seed)
    process, count = shard
    where = f"{cfg.data.prepared_dir} train"
    layout, augment = fmt.layout, bool(cfg.images.augment)
    add_images = _with_images(layout)
    pattern = mix_pattern(cfg.images.text_ratio) if layout is not None else (1, 1)

    def example(item):
        stream, epoch, index, record = item
        if stream == 0:
            rng = np.random.default_rng([seed + 1, epoch, index])
            row = decode_row(record, f"{where} row {index}")
            return add_images(semi_causal_example(row, rng, fmt.spans, fmt.encoding))
        rng = np.random.default_rng([seed + 4, epoch, index])
        what = f"{where} image-text row {index}"
        return vl_pipeline.prepared_image_row(record, rng, layout, tok, augment, what)

    ds = ProcessShare(sources, seed, batch_size * count, process, count, pattern).map(example)
    return ds.batch(batch_size, drop_remainder=True, batch_fn=_stack)


def _prepared_eval_rows(cfg, tok, n: int, fmt: RowFormat, shard) -> list[dict]:
    """The first `n` rows of this process's share of the prepared validation rows (file
    order), spans drawn with a fixed seed, as `eval_batches` does."""
    src = _prepared(cfg, tok, fmt, "validation")[0]
    rng = np.random.default_rng(int(cfg.data.seed) + 2)
    where = f"{cfg.data.prepared_dir} validation"
    picked = range(shard[0], len(src), shard[1])[:n]
    add_images = _with_images(fmt.layout)
    return [
        add_images(
            semi_causal_example(
                decode_row(src[k], f"{where} row {k}"), rng, fmt.spans, fmt.encoding
            )
        )
        for k in picked
    ]


def _prepared_eval_image_rows(cfg, tok, n: int, fmt: RowFormat, shard) -> list[dict]:
    """The first `n` of this process's share of the prepared image-text validation rows (file
    order, fixed prefix lengths, central crops), as vl_pipeline.eval_image_rows does."""
    src = _prepared(cfg, tok, fmt, "validation")[1]
    rng = np.random.default_rng(int(cfg.data.seed) + 5)
    where = f"{cfg.data.prepared_dir} image-text validation"
    picked = range(shard[0], len(src), shard[1])[:n]
    return [
        vl_pipeline.prepared_image_row(src[k], rng, fmt.layout, tok, False, f"{where} row {k}")
        for k in picked
    ]


def _pad_batches(rows, batch_size):
    while len(rows) % batch_size:
        empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
        empty["slot_index"] = np.full_like(rows[0]["slot_index"], -1)
        rows.append(empty)
    return [_stack(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def eval_batches(
    cfg, tok: Tokenizer, batch_size: int, max_batches: int, fmt: RowFormat, shard=(0, 1)
):
    """The fixed text validation batches (list of dicts), padded to full batches."""
    spans, encoding = fmt.spans, fmt.encoding
    if cfg.data.prepared_dir:
        rows = _prepared_eval_rows(cfg, tok, batch_size * max_batches, fmt, shard)
        if not rows:
            where = f"data.prepared_dir={cfg.data.prepared_dir}"
            raise DataError(f"{where}: process {shard[0]} of {shard[1]} gets no validation rows")
        return _pad_batches(rows, batch_size)
    docs = _documents(cfg, "validation", tok, shard, None)
    rng = np.random.default_rng(int(cfg.data.seed) + 2)
    rows = []
    add_images = _with_images(fmt.layout)
    for row in PackedRows(docs, cfg.data.seq_len, tok.ids):  # file order, one at a time
        rows.append(add_images(semi_causal_example(row, rng, spans, encoding)))
        if len(rows) == batch_size * max_batches:
            break
    if not rows:
        raise DataError("validation split produced no rows: raise data.validation_fraction")
    return _pad_batches(rows, batch_size)


def eval_sets(cfg, tok: Tokenizer, batch_size: int, fmt: RowFormat, shard=(0, 1)) -> dict:
    """Named fixed evaluation sets: 'text' (held-out documents) and, with images, 'caption'
    (held-out image-text pairs: the loss covers the caption tokens after the prefix); when
    finetuning, 'task' (the validation examples' targets)."""
    if cfg.task.name:  # finetuning: the loss on the task's validation targets
        rows = task_eval_rows(cfg, tok, fmt, shard)
        if not rows:
            raise DataError(f"task {cfg.task.name}: the validation split produced no rows")
        return {"task": _pad_batches(rows, batch_size)}
    sets = {"text": eval_batches(cfg, tok, batch_size, cfg.train.eval_batches, fmt, shard)}
    if fmt.layout is not None:
        n = batch_size * cfg.images.eval_batches
        if cfg.data.prepared_dir:
            rows = _prepared_eval_image_rows(cfg, tok, n, fmt, shard)
        else:
            rows = vl_pipeline.eval_image_rows(cfg, tok, fmt.layout, n, shard)
        if not rows:
            raise DataError("the image validation split produced no rows")
        sets["caption"] = _pad_batches(rows, batch_size)
    return sets
