"""The grain pipeline: corpus documents -> tokenize -> pack -> semi-causal spans -> batches.

Training (`train_iterator`): the split is sharded per process (`process_index::process_count`),
shuffled with the config seed and re-shuffled every epoch, repeated forever; packing and span
sampling are deterministic functions of that order and of the seed. The iterator's state is a
small JSON dict (saved in every checkpoint by grain's Orbax handler), so a resumed run yields
exactly the batch the interrupted run would have yielded next.

Evaluation (`eval_batches`): the validation split in file order, packed once, spans sampled with
a fixed seed, the last batch padded with empty rows (loss weight 0); cached in memory so every
evaluation scores exactly the same tokens.
"""

from __future__ import annotations

import grain
import numpy as np

from metalm_jax.data import corpora
from metalm_jax.data.packing import SentencePacker
from metalm_jax.data.spans import SpanConfig, semi_causal_example
from metalm_jax.data.tokenizer import Tokenizer, load_or_train


class _PackDatasetIterator(grain.DatasetIterator):
    """Packs tokenized documents into rows; state = (parent state before the current document,
    sentence index inside it), so no buffered tokens need saving."""

    def __init__(self, parent: grain.DatasetIterator, length: int):
        super().__init__(parent)
        self._doc_state = parent.get_state()
        self._packer = SentencePacker(length, self._fetch)

    def _fetch(self):
        self._doc_state = self._parent.get_state()
        return next(self._parent)

    def __next__(self):
        return self._packer.next_row()

    def get_state(self):
        return {
            "parent": self._doc_state,
            "sent_idx": int(self._packer.sent_idx),
            "has_doc": self._packer.doc is not None,
        }

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._doc_state = state["parent"]
        self._packer.doc = None
        if state["has_doc"]:
            self._packer.load_doc(next(self._parent), int(state["sent_idx"]))


class PackIterDataset(grain.IterDataset):
    """grain IterDataset of packed rows {tokens, segment_ids, positions}, each int32[L]."""

    def __init__(self, parent: grain.IterDataset, length: int):
        super().__init__(parent)
        self._length = length

    def __iter__(self):
        return _PackDatasetIterator(self._parent.__iter__(), self._length)


def span_config(cfg) -> SpanConfig:
    return SpanConfig(
        min_len=cfg.spans.min_len,
        max_len=cfg.spans.max_len,
        ratio=cfg.spans.ratio,
        enc_length=cfg.spans.enc_length,
        enc_bos=cfg.spans.enc_bos,
    )


def build_tokenizer(cfg, workdir: str) -> Tokenizer:
    """Loads cfg.data.tokenizer_path, or the workdir's cached model, or trains one on `train`."""
    import os

    builder = corpora.make_builder(cfg.data, cfg.data.tfds_data_dir or None)

    def texts():
        src = corpora.load_split(builder, "train")
        for i in range(len(src)):
            yield from (p for p in corpora.decode_example(src[i]) if p.strip())

    return load_or_train(
        os.path.join(workdir, "tokenizer.model"),
        texts,
        cfg.data.vocab_size,
        cfg.data.tokenizer_path or None,
    )


def _documents(cfg, split: str, tok: Tokenizer, shard: tuple[int, int], seed: int | None):
    builder = corpora.make_builder(cfg.data, cfg.data.tfds_data_dir or None)
    ds = grain.MapDataset.source(corpora.load_split(builder, split))
    index, count = shard
    ds = ds[index::count]
    if len(ds) == 0:
        raise ValueError(f"{split}: process {index} of {count} gets no documents")
    if seed is not None:
        ds = ds.shuffle(seed=seed).repeat(None)
    return ds.map(lambda ex: tok.encode_document(corpora.decode_example(ex)))


def _stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def train_iterator(cfg, tok: Tokenizer, batch_size: int, shard=(0, 1)):
    """Infinite, checkpointable iterator of per-process batches (dicts of numpy arrays)."""
    seed = int(cfg.data.seed)
    spans = span_config(cfg)
    docs = _documents(cfg, "train", tok, shard, seed).to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=64)
    )
    ds = PackIterDataset(docs, cfg.data.seq_len)
    ds = ds.random_map(lambda row, rng: semi_causal_example(row, rng, spans), seed=seed + 1)
    return iter(ds.batch(batch_size, drop_remainder=True, batch_fn=_stack))


def eval_batches(cfg, tok: Tokenizer, batch_size: int, max_batches: int, shard=(0, 1)):
    """The fixed validation batches (list of dicts), padded to full batches."""
    spans = span_config(cfg)
    docs = _documents(cfg, "validation", tok, shard, None).to_iter_dataset()
    rng = np.random.default_rng(int(cfg.data.seed) + 2)
    rows = []
    for row in PackIterDataset(docs, cfg.data.seq_len):
        rows.append(semi_causal_example(row, rng, spans))
        if len(rows) == batch_size * max_batches:
            break
    if not rows:
        raise ValueError("validation split produced no rows")
    while len(rows) % batch_size:
        empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
        empty["slot_index"] = np.full_like(rows[0]["slot_index"], -1)
        rows.append(empty)
    return [_stack(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
