"""Semi-causal span sampler and the Eq. 1 loss weights (pure numpy)."""

import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import (
    SpanConfig,
    build_example,
    sample_spans,
    segment_bounds,
    semi_causal_example,
)
from metalm_jax.data.tokenizer import BOS_ID, EOD_ID, PAD_ID
from metalm_jax.types import Batch

CFG = SpanConfig(min_len=64, max_len=128, ratio=0.25, enc_length=640)


def _spans_for(seed, seq_len=2048, docs=3):
    row = testing.random_rows(1, seq_len, 1000, seed=seed, docs_per_row=docs)[0]
    return row, sample_spans(row["segment_ids"], np.random.default_rng(seed), CFG)


def test_span_properties_over_many_rows():
    ratios = []
    for seed in range(200):
        row, spans = _spans_for(seed)
        seg = row["segment_ids"]
        lengths = [e - s for s, e in spans]
        assert all(CFG.min_len <= n <= CFG.max_len for n in lengths)
        for (_s1, e1), (s2, _) in zip(spans, spans[1:], strict=False):
            assert e1 < s2, "spans overlap or touch"
        for s, e in spans:  # same document, with a token before and after
            assert len(set(seg[s - 1 : e + 1].tolist())) == 1
        assert sum(lengths) + len(spans) <= CFG.enc_length
        ratios.append(sum(lengths) / np.sum(seg > 0))
    assert 0.22 <= np.mean(ratios) <= 0.30, np.mean(ratios)


def test_same_seed_same_spans_and_different_seed_differs():
    a = _spans_for(7)[1]
    assert a == _spans_for(7)[1]
    assert a != _spans_for(8)[1]


def test_short_documents_get_no_spans():
    seg = np.repeat(np.arange(1, 33), 64).astype(np.int32)  # 32 docs of 64 tokens < 64 + 2
    assert sample_spans(seg, np.random.default_rng(0), CFG) == []


def test_eq1_worked_example_by_hand():
    # One document: <s> x1 .. x8 </d>, span [3, 6) = x3 x4 x5 (the module docstring's example).
    x = [BOS_ID, 11, 12, 13, 14, 15, 16, 17, 18, EOD_ID]
    row = {
        "tokens": np.array(x, np.int32),
        "segment_ids": np.ones(10, np.int32),
        "positions": np.arange(10, dtype=np.int32),
    }
    cfg = SpanConfig(min_len=1, max_len=3, enc_length=6)
    ex = build_example(row, [(3, 6)], cfg)
    np.testing.assert_array_equal(ex["slot_index"], [-1, -1, -1, 1, 2, 3, -1, -1, -1, -1])
    np.testing.assert_array_equal(ex["targets"], [11, 12, 13, 14, 15, 16, 17, 18, EOD_ID, 0])
    #                   <s> x1 x2 | x3 x4 x5 | x6 x7 x8 </d>
    np.testing.assert_array_equal(ex["loss_weights"], [1, 1, 1, 0, 0, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(ex["enc_tokens"], [BOS_ID, 13, 14, 15, PAD_ID, PAD_ID])
    np.testing.assert_array_equal(ex["enc_segment_ids"], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(ex["enc_positions"], [0, 1, 2, 3, 0, 0])
    # The position before the span predicts its first token; the last slot the token after.
    assert ex["targets"][2] == 13 and ex["loss_weights"][2] == 1
    assert ex["targets"][5] == 16 and ex["loss_weights"][5] == 1


def test_two_spans_two_documents_and_padding():
    tokens = np.arange(100, 116, dtype=np.int32)
    seg = np.array([1] * 7 + [2] * 7 + [0] * 2, np.int32)
    pos = np.array(list(range(7)) * 2 + [0, 0], np.int32)
    row = {"tokens": tokens, "segment_ids": seg, "positions": pos}
    cfg = SpanConfig(min_len=1, max_len=3, enc_length=10, enc_bos=False)
    ex = build_example(row, [(2, 4), (9, 12)], cfg)
    np.testing.assert_array_equal(
        ex["slot_index"][:14], [-1, -1, 0, 1] + [-1] * 5 + [2, 3, 4, -1, -1]
    )
    # last token of each document and the padding predict nothing
    assert ex["loss_weights"][6] == 0 and ex["loss_weights"][13] == 0
    np.testing.assert_array_equal(ex["loss_weights"][14:], [0, 0])
    np.testing.assert_array_equal(ex["loss_weights"][:7], [1, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(ex["enc_segment_ids"], [1, 1, 2, 2, 2, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ex["enc_positions"][:5], [0, 1, 0, 1, 2])


def test_span_crossing_a_document_is_rejected():
    row = testing.random_rows(1, 64, 100, docs_per_row=2)[0]
    s, e = segment_bounds(row["segment_ids"])[0]
    with pytest.raises(ValueError, match="crosses a document"):
        build_example(row, [(e - 2, e + 2)], SpanConfig(min_len=1, max_len=8, enc_length=16))


def test_span_longer_than_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="spans.max_len=128.*enc_length=100"):
        SpanConfig(min_len=64, max_len=128, enc_length=100)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        SpanConfig(min_len=10, max_len=5)


def test_examples_follow_the_batch_contract():
    batch = Batch.from_dict(testing.random_batch(4, 256, 500, SpanConfig(8, 32, 0.25, 96)))
    batch.validate()
    # every slot points at a real encoder position holding the same token
    for b in range(4):
        idx = np.where(batch.slot_index[b] >= 0)[0]
        assert len(idx) > 0
        np.testing.assert_array_equal(
            batch.enc_tokens[b, batch.slot_index[b, idx]], batch.tokens[b, idx]
        )
        assert np.all(batch.enc_segment_ids[b, batch.slot_index[b, idx]] > 0)


def test_semi_causal_example_is_deterministic():
    row = testing.random_rows(1, 512, 300, seed=3)[0]
    cfg = SpanConfig(8, 32, 0.25, 160)
    a = semi_causal_example(row, np.random.default_rng(5), cfg)
    b = semi_causal_example(row, np.random.default_rng(5), cfg)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_choice_is_numpys_draw_for_draw():
    """spans._choice (the span loop's segment draw) = Generator.choice(n, p=w / w.sum()), and
    leaves the generator in the same state."""
    from metalm_jax.data.spans import _choice

    gen = np.random.default_rng(0)
    for seed in range(300):
        w = gen.integers(0, 3000, gen.integers(1, 20)).astype(np.float64)
        w[gen.integers(len(w))] += 1  # not all zero
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(5):
            assert _choice(a, w.tolist()) == int(b.choice(len(w), p=w / w.sum()))
        assert a.random() == b.random()


def _reference_segment_bounds(seg):
    bounds, i = [], 0
    while i < len(seg):
        j = i
        while j < len(seg) and seg[j] == seg[i]:
            j += 1
        if seg[i] != 0:
            bounds.append((i, j))
        i = j
    return bounds


def test_segment_bounds_and_positions_match_a_plain_loop():
    from metalm_jax.data.spans import positions_in_segments

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 64):
        for _ in range(20):
            seg = np.repeat(rng.integers(0, 4, n), rng.integers(1, 4, n))[:n].astype(np.int32)
            bounds = _reference_segment_bounds(seg.tolist())
            assert segment_bounds(seg) == bounds
            want = np.zeros(len(seg), np.int32)
            for a, b in bounds:
                want[a:b] = np.arange(b - a)
            got = positions_in_segments(seg)
            assert got.dtype == np.int32 and np.array_equal(got, want)
