"""Full-sentence packing."""

import numpy as np
import pytest

from metalm_jax.data.pretrain.packing import SentencePacker
from metalm_jax.data.tokenizer import BOS_ID, PAD_ID


def _stream(docs):
    it = iter(docs)
    return lambda: [np.asarray(s, np.int32) for s in next(it)]


def test_docstring_example_and_segments():
    p = SentencePacker(8, _stream([[[11, 12], [13]], [[21, 22, 23]], [[31, 32, 33, 34, 35]]]))
    row = p.next_row()
    np.testing.assert_array_equal(row["tokens"], [BOS_ID, 11, 12, 13, BOS_ID, 21, 22, 23])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(row["positions"], [0, 1, 2, 3, 0, 1, 2, 3])
    row = p.next_row()  # the 5-token sentence starts a new row, then the stream ends
    np.testing.assert_array_equal(row["tokens"], [BOS_ID, 31, 32, 33, 34, 35, PAD_ID, PAD_ID])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 1, 1, 0, 0])
    with pytest.raises(StopIteration):
        p.next_row()


def test_sentence_that_does_not_fit_moves_to_next_row_whole():
    p = SentencePacker(8, _stream([[[1, 2, 3], [4, 5, 6, 7, 8]]]))
    a, b = p.next_row(), p.next_row()
    np.testing.assert_array_equal(a["tokens"][:4], [BOS_ID, 1, 2, 3])
    np.testing.assert_array_equal(a["segment_ids"][4:], [0, 0, 0, 0])
    np.testing.assert_array_equal(b["tokens"][:6], [BOS_ID, 4, 5, 6, 7, 8])


def test_overlong_sentence_is_cut_into_rows():
    p = SentencePacker(4, _stream([[list(range(10, 17))]]))
    rows = [p.next_row()["tokens"] for _ in range(3)]
    np.testing.assert_array_equal(np.stack(rows)[:, 1:].ravel()[:7], list(range(10, 17)))
    assert all(r[0] == BOS_ID for r in rows)


def test_packer_resumes_from_sentence_index():
    docs = [[[1, 2], [3, 4], [5, 6]], [[7, 8, 9]]]
    p = SentencePacker(5, _stream(docs))
    p.next_row()
    state = p.sent_idx
    expect = p.next_row()
    q = SentencePacker(5, _stream(docs[1:]))
    q.load_doc([np.asarray(s, np.int32) for s in docs[0]], state)
    np.testing.assert_array_equal(q.next_row()["tokens"], expect["tokens"])
