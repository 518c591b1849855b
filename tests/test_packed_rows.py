"""Rows drawn among K open documents (data/pretrain/packed_rows.py): spread-out long documents,
exact resume from the state, finite streams, and the default config."""

import json

import grain
import numpy as np
import pytest

from metalm_jax.config import base_config
from metalm_jax.data.pretrain.packed_rows import PackedRows
from metalm_jax.data.tokenizer import BOS_ID, PAD_ID, SENTENCEPIECE_IDS

L = 16


def _corpus(n_docs=200, long_sentences=300, seed=0):
    """Tokenized documents whose tokens name them (doc i: tokens 10 + i); document 0 is long
    (`long_sentences` sentences of 7 tokens, about half a row each), the rest 1-3 sentences."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        n = long_sentences if i == 0 else int(rng.integers(1, 4))
        docs.append([np.full(7, 10 + i, np.int32) for _ in range(n)])
    return docs


def _stream(docs, shuffle_seed=None):
    ds = grain.MapDataset.source(docs)
    if shuffle_seed is not None:
        ds = ds.shuffle(seed=shuffle_seed).repeat(None)
    return ds


def _doc_ids(row) -> set:
    t = row["tokens"]
    return set((t[(t != BOS_ID) & (t != PAD_ID)] - 10).tolist())


def _longest_run(rows, doc: int) -> int:
    best = run = 0
    for row in rows:
        run = run + 1 if doc in _doc_ids(row) else 0
        best = max(best, run)
    return best


def _rows(it, n):
    return [next(it) for _ in range(n)]


def test_a_long_document_is_spread_out_with_open_documents():
    docs = _corpus(n_docs=800, long_sentences=120)  # an epoch: ~850 rows, 60 of document 0
    long_rows = 60  # document 0: 120 sentences of 8 tokens (with <s>), two per 16-token row
    for k in (1, 16):
        ds = PackedRows(_stream(docs, 0), L, SENTENCEPIECE_IDS, open_docs=k, seed=3)
        rows = _rows(iter(ds), 1800)
        run = _longest_run(rows, 0)
        if k == 1:
            assert run >= long_rows  # in order: one block of consecutive rows per epoch
        else:
            assert run <= 5, run  # about one row in 16 while it lasts
            assert sum(0 in _doc_ids(r) for r in rows) >= long_rows  # all of it, in time


def test_every_token_comes_out_once_and_rows_follow_the_packing_contract():
    docs = _corpus(n_docs=50, long_sentences=40)
    rows = list(PackedRows(_stream(docs), L, SENTENCEPIECE_IDS, open_docs=8, seed=1))
    counts = np.bincount(np.concatenate([r["tokens"] for r in rows]), minlength=70)
    want = np.bincount(np.concatenate([np.concatenate(d) for d in docs]), minlength=70)
    np.testing.assert_array_equal(counts[10:], want[10:])
    for r in rows:
        starts = np.flatnonzero(r["positions"] == 0)
        assert np.all(r["tokens"][starts[r["segment_ids"][starts] > 0]] == BOS_ID)
        assert np.all((r["segment_ids"] > 0) | (r["tokens"] == PAD_ID))


@pytest.mark.parametrize("k", [1, 8])
def test_state_mid_stream_resumes_the_same_rows(k):
    docs = _corpus(n_docs=60, long_sentences=80)
    ds = PackedRows(_stream(docs, shuffle_seed=5), L, SENTENCEPIECE_IDS, open_docs=k, seed=2)
    it = iter(ds)
    _rows(it, 37)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    want = _rows(it, 120)  # crosses the end of the first epoch
    again = iter(ds)
    _rows(again, 5)  # a fresh iterator somewhere else
    again.set_state(state)
    for a, b in zip(want, _rows(again, 120), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_same_seed_same_rows_other_seed_other_order():
    docs = _corpus(n_docs=60, long_sentences=20)
    first = [
        np.stack([r["tokens"] for r in _rows(iter(PackedRows(
            _stream(docs, 0), L, SENTENCEPIECE_IDS, open_docs=8, seed=s)), 30)])
        for s in (4, 4, 5)
    ]  # fmt: skip
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


def test_a_finite_stream_ends_after_every_packer_finishes():
    docs = _corpus(n_docs=20, long_sentences=10)
    ds = PackedRows(_stream(docs), L, SENTENCEPIECE_IDS, open_docs=4, seed=0)
    it = iter(ds)
    rows = _rows(it, 5)
    state = it.get_state()
    rest = list(it)
    it.set_state(state)
    again = list(it)
    assert len(rest) == len(again) > 0
    for a, b in zip(rest, again, strict=True):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
    got = sum(int((r["tokens"] >= 10).sum()) for r in rows + rest)
    assert got == sum(len(s) for d in docs for s in d)


def test_a_state_saved_before_rows_were_shuffled_resumes():
    """The old single-packer state ({parent: {next_index}, sent_idx, has_doc}): document 3 of
    the stream open at sentence 2 is the new state with that document open."""
    docs = _corpus(n_docs=30, long_sentences=9)
    ds = PackedRows(_stream(docs, 1), L, SENTENCEPIECE_IDS, open_docs=1)
    old, new = iter(ds), iter(ds)
    old.set_state({"parent": {"next_index": 3}, "sent_idx": 2, "has_doc": True})
    new.set_state({"next_doc": 4, "open": [[3, 2]], "rows": 0, "ended": False})
    for a, b in zip(_rows(old, 10), _rows(new, 10), strict=True):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])


def test_another_number_of_open_documents_is_named():
    ds = PackedRows(_stream(_corpus(n_docs=10), 0), L, SENTENCEPIECE_IDS, open_docs=4)
    state = iter(ds).get_state()
    other = iter(PackedRows(_stream(_corpus(n_docs=10), 0), L, SENTENCEPIECE_IDS, open_docs=2))
    with pytest.raises(ValueError, match=r"open_documents=4"):
        other.set_state(state)
    with pytest.raises(ValueError, match=r"data.open_documents must be >= 1"):
        PackedRows(_stream(_corpus(n_docs=10)), L, SENTENCEPIECE_IDS, open_docs=0)


def test_the_default_config_spreads_rows():
    assert base_config().data.open_documents >= 16
