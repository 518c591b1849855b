"""Packed rows with K documents open at once, each row drawn at random among them; checkpointable.

Packing a shuffled document stream in order puts all the rows of one document next to each
other: a 229 KB licence file among KJV chapters filled hundreds of consecutive rows, dozens of
whole batches, and the train loss jumped while it lasted. Here K packers
(packing.SentencePacker) each hold one open document; every row comes from a packer drawn at
random, and a packer that runs out takes the next document of the shared (shuffled) stream. A
document of R rows is then spread over about K * R rows, one row in K, whatever its length;
K = 1 is plain packing in stream order.

Worked example, K = 2, documents A (3 full rows), B and C (1 full row each), draws 0 1 0 1 0:

    row 0  packer 0 opens A   A1
    row 1  packer 1 opens B   B1
    row 2  packer 0           A2
    row 3  packer 1 opens C   C1       (B is done; C is the next document of the stream)
    row 4  packer 0           A3

As in packing.py a row may hold the end of one document and the start of the packer's next one
(separate segments). The draw for row r is a function of (seed, r) alone.

The stream is random access (a grain MapDataset of tokenized documents, read ahead by grain's
threads), so the state is a few integers: the next document of the stream, each packer's
(document, sentence) and the row count. A restore reads the K open documents again by index and
restarts the stream there: no tokens are saved and the continuation is exact. With a finite
stream (evaluation) packers drop out as they finish and the last rows may be partial.
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from metalm_jax.data.pretrain.packing import SentencePacker
from metalm_jax.data.tokenizer import SpecialIds


class _PackedRowsIterator(grain.DatasetIterator):
    def __init__(self, docs, length: int, ids: SpecialIds, open_docs: int, seed: int, options):
        super().__init__()
        self._docs = docs
        self._options = options
        self._seed = seed
        self._packers = [
            SentencePacker(length, functools.partial(self._fetch, k), ids) for k in range(open_docs)
        ]
        self._doc_of = [-1] * open_docs  # stream index of each packer's document
        self._rows = 0
        self._ended = False
        self._stream = None
        self._start_stream(0)

    def _start_stream(self, index: int) -> None:
        if self._stream is not None:
            self._stream.close()
        self._next_doc = index
        self._stream = iter(self._docs[index:].to_iter_dataset(self._options))

    def _fetch(self, k: int):
        try:
            doc = next(self._stream)
        except StopIteration:
            self._ended = True
            raise
        self._doc_of[k] = self._next_doc
        self._next_doc += 1
        return doc

    def _draw(self, live: list[int]) -> int:
        if len(live) == 1:
            return live[0]
        return live[int(np.random.default_rng([self._seed, self._rows]).integers(len(live)))]

    def __next__(self) -> dict[str, np.ndarray]:
        while True:
            live = [k for k, p in enumerate(self._packers) if not (self._ended and p.needs_doc())]
            if not live:
                raise StopIteration
            try:
                row = self._packers[self._draw(live)].next_row()
            except StopIteration:
                continue  # that packer has finished (the stream ended): draw among the rest
            self._rows += 1
            return row

    def get_state(self) -> dict:
        return {
            "next_doc": int(self._next_doc),
            "open": [
                None if p.needs_doc() else [int(self._doc_of[k]), int(p.sent_idx)]
                for k, p in enumerate(self._packers)
            ],
            "rows": int(self._rows),
            "ended": bool(self._ended),
        }

    def set_state(self, state: dict) -> None:
        state = _from_unshuffled_state(state, len(self._packers))
        if len(state["open"]) != len(self._packers):
            raise ValueError(
                f"data.open_documents: the saved data position has {len(state['open'])} open "
                f"documents, this config {len(self._packers)}; resume with "
                f"--config.data.open_documents={len(state['open'])}"
            )
        for k, (p, entry) in enumerate(zip(self._packers, state["open"], strict=True)):
            p.doc = None
            self._doc_of[k] = -1
            if entry is not None:
                index, sent_idx = entry
                p.load_doc(self._docs[index], sent_idx)
                self._doc_of[k] = index
        self._start_stream(int(state["next_doc"]))
        self._rows = int(state["rows"])
        self._ended = bool(state["ended"])


def _from_unshuffled_state(state: dict, open_docs: int) -> dict:
    """A data position saved before rows were shuffled ({parent: {next_index}, sent_idx,
    has_doc}: one packer, the stream read ahead by grain) as this module's state. With K = 1
    the continuation is the one the old pipeline would have given; with K > 1 the run goes on
    from the same document with the other packers opening the next ones."""
    if "parent" not in state:
        return state
    index = int(state["parent"]["next_index"])
    first = [index, int(state["sent_idx"])] if state["has_doc"] else None
    return {
        "next_doc": index + 1 if first else index,
        "open": [first] + [None] * (open_docs - 1),
        "rows": 0,
        "ended": False,
    }


class PackedRows(grain.IterDataset):
    """IterDataset of packed rows {tokens, segment_ids, positions}, each int32[L], from a
    MapDataset of tokenized documents (lists of int32 sentence arrays), `open_docs` documents
    packed at once (see the module docstring); `ids` are the tokenizer's (<s>, <pad>)."""

    def __init__(
        self,
        docs: grain.MapDataset,
        length: int,
        ids: SpecialIds,
        open_docs: int = 1,
        seed: int = 0,
        read_options: grain.ReadOptions | None = None,
    ):
        super().__init__()
        if open_docs < 1:
            raise ValueError(
                f"data.open_documents must be >= 1 (1 = rows in document order), got {open_docs}"
            )
        self._docs = docs
        self._length = length
        self._ids = ids
        self._open_docs = open_docs
        self._seed = seed
        # Default: read on the calling thread (evaluation, tests); training passes read-ahead.
        self._options = read_options or grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)

    def __iter__(self) -> _PackedRowsIterator:
        return _PackedRowsIterator(
            self._docs, self._length, self._ids, self._open_docs, self._seed, self._options
        )
