"""Full-sentence packing (RoBERTa's FULL-SENTENCES) into fixed-length rows, pure numpy.

Each row holds whole sentences taken contiguously from one or more documents. Every document
piece in a row is its own segment: it starts with <s>, gets its own segment id (1, 2, ...) and
positions restarting at 0, so attention never crosses documents. A sentence that does not fit
in the rest of the row starts the next row (the remainder is padding, segment 0); a sentence
longer than a whole row is cut into row-sized chunks when its document is loaded.

Worked example, L = 8, documents A = [a1 a2 | a3] and B = [b1 b2 b3] (| = sentence break):

    tokens       <s> a1  a2  a3 <s> b1  b2  b3
    segment_ids   1   1   1   1   2   2   2   2
    positions     0   1   2   3   0   1   2   3

If B's sentence were 5 tokens long it would not fit: the row would end after a3 with 4 pad
tokens, and B would start the next row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds


def split_long(sentences: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cuts sentences longer than max_len into consecutive chunks of at most max_len."""
    out = []
    for s in sentences:
        if 0 < len(s) <= max_len:  # nearly every sentence: kept whole
            out.append(s)
            continue
        for i in range(0, max(len(s), 1), max_len):
            if len(s[i : i + max_len]):
                out.append(s[i : i + max_len])
    return out


class SentencePacker:
    """Packs a stream of tokenized documents into rows of `length` tokens.

    `next_doc()` returns the next document as a list of int32 sentence arrays. The packer's
    position is (documents consumed, sentence index in the current one): see `sent_idx`, so a
    data iterator can checkpoint it exactly without saving any buffered tokens.
    """

    def __init__(
        self,
        length: int,
        next_doc: Callable[[], list[np.ndarray]],
        ids: SpecialIds = SENTENCEPIECE_IDS,
    ):
        if length < 2:
            raise ValueError(f"packing length must be >= 2, got {length}")
        self.length = length
        self._next_doc = next_doc
        self.ids = ids  # the tokenizer's: <s> starts each segment, <pad> fills
        self.doc: list[np.ndarray] | None = None
        self.sent_idx = 0

    def load_doc(self, doc: list[np.ndarray], sent_idx: int = 0) -> None:
        self.doc = split_long([s for s in doc if len(s)], self.length - 1)
        self.sent_idx = sent_idx

    def needs_doc(self) -> bool:
        return self.doc is None or self.sent_idx >= len(self.doc)

    def next_row(self) -> dict[str, np.ndarray]:
        L = self.length
        pieces: list[np.ndarray] = []  # the row's tokens in order: <s>, sentences, <s>, ...
        seg_lens: list[int] = []  # tokens of each segment (its <s> included)
        n, open_segment = 0, False
        while True:
            if self.needs_doc():
                try:
                    doc = self._next_doc()
                except StopIteration:
                    if n == 0:
                        raise
                    break  # a finite stream ends: emit the partial row
                self.load_doc(doc)
                open_segment = False
                continue
            sent = self.doc[self.sent_idx]
            need = len(sent) + (0 if open_segment else 1)
            if n + need > L:
                break
            if not open_segment:
                pieces.append(np.array([self.ids.bos], np.int32))
                seg_lens.append(0)
                open_segment = True
            pieces.append(sent)
            seg_lens[-1] += need
            n += need
            self.sent_idx += 1
            if n == L:
                break
        # filled once per row (not per sentence): the same arrays, built with a few numpy calls
        tokens = np.full(L, self.ids.pad, np.int32)
        seg = np.zeros(L, np.int32)
        pos = np.zeros(L, np.int32)
        if n:
            lens = np.asarray(seg_lens)
            starts = np.cumsum(lens) - lens
            tokens[:n] = np.concatenate(pieces)
            seg[:n] = np.repeat(np.arange(1, len(lens) + 1, dtype=np.int32), lens)
            pos[:n] = np.arange(n) - np.repeat(starts, lens)
        return {"tokens": tokens, "segment_ids": seg, "positions": pos}
