"""Attention backends against the dense reference: blockwise, splash (interpret mode on CPU),
the cuDNN call (its XLA twin on CPU), the backend chooser, and whole models per backend."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig, build_example
from metalm_jax.eval import decode
from metalm_jax.model import attention
from metalm_jax.model.attention import attend, choose, cudnn_attention, dense_attention
from metalm_jax.model.blockwise import blockwise_attention
from metalm_jax.model.build import model_config
from metalm_jax.model.masks import SegmentMask
from metalm_jax.model.metalm import MetaLM
from metalm_jax.types import Batch

FWD_TOL, GRAD_TOL = 1e-5, 1e-4


def _qkv(B, L, N, H, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(B, L, N, H)), jnp.float32) for _ in range(3)]


def _packed_segments(L):
    """Row 0: three packed documents then padding; row 1: one document then padding."""
    a, b, c = L // 4, L // 2, L // 8
    row0 = [1] * a + [2] * b + [3] * c
    row1 = [1] * (L - L // 5)
    return np.array([r + [0] * (L - len(r)) for r in (row0, row1)], np.int32)


def _fwd_and_grads(fn, q, k, v, bias, cot):
    """Output and d(sum(out * cot)) / d(q, k, v[, bias])."""
    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    loss = lambda q, k, v, b: jnp.sum(fn(q, k, v, b) * cot)
    return jax.jit(lambda *a: (fn(*a), jax.grad(loss, argnums)(*a)))(q, k, v, bias)


def _assert_same(got, want):
    (out, grads), (ref, ref_grads) = got, want
    np.testing.assert_allclose(out, ref, atol=FWD_TOL, rtol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, atol=GRAD_TOL, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_blockwise_matches_dense_on_packed_segments_with_padding(causal, with_bias, monkeypatch):
    B, L, N, H = 2, 37, 2, 8  # L not a multiple of the block: padded inside
    monkeypatch.setattr(attention, "BLOCK", 8)
    q, k, v = _qkv(B, L, N, H)
    mask = SegmentMask(jnp.asarray(_packed_segments(L)), causal=causal)
    rng = np.random.default_rng(1)
    bias = jnp.asarray(rng.normal(size=(B, N, L, L)), jnp.float32) if with_bias else None
    cot = jnp.asarray(rng.normal(size=(B, L, N, H)), jnp.float32)
    fast = lambda q, k, v, b: attend("blockwise", q, k, v, mask, b)
    ref = lambda q, k, v, b: dense_attention(q, k, v, mask.dense(), b)
    # every row, padding rows included, and every gradient (bias too)
    _assert_same(_fwd_and_grads(fast, q, k, v, bias, cot), _fwd_and_grads(ref, q, k, v, bias, cot))


@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_skips_fully_masked_blocks(causal):
    """NaN keys and values in a block no query block beyond it may see: had the block been
    computed (and masked afterwards), the NaNs would reach every row through p @ v."""
    B, L, N, H = 1, 32, 2, 8
    q, k, v = _qkv(B, L, N, H, seed=2)
    seg = jnp.asarray([[1] * 8 + [2] * 24], jnp.int32)  # segment 1 fills block 0 exactly
    poison = jnp.arange(L)[None, :, None, None] < 8
    k_bad, v_bad = jnp.where(poison, jnp.nan, k), jnp.where(poison, jnp.nan, v)
    out = jax.jit(blockwise_attention, static_argnums=(4,), static_argnames="block")(
        q, k_bad, v_bad, seg, causal, block=8
    )
    ref = dense_attention(q, k, v, SegmentMask(seg, causal).dense())
    np.testing.assert_allclose(out[:, 8:], ref[:, 8:], atol=FWD_TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [True, False])
def test_splash_matches_dense_in_interpret_mode(causal):
    from metalm_jax.model.splash import splash_attention

    B, L, N, H = 2, 384, 2, 16  # three 128-blocks
    q, k, v = _qkv(B, L, N, H, seed=3)
    seg = jnp.asarray(_packed_segments(L))
    mask = SegmentMask(seg, causal=causal)
    cot = jnp.asarray(np.random.default_rng(4).normal(size=(B, L, N, H)), jnp.float32)
    real = (seg > 0)[:, :, None, None]  # splash lets padding attend to padding: compare real rows
    fast = lambda q, k, v, _: jnp.where(
        real, splash_attention(q, k, v, seg, causal, interpret=True), 0
    )
    ref = lambda q, k, v, _: jnp.where(real, dense_attention(q, k, v, mask.dense()), 0)
    _assert_same(_fwd_and_grads(fast, q, k, v, None, cot), _fwd_and_grads(ref, q, k, v, None, cot))


@pytest.mark.parametrize("causal", [True, False])
def test_cudnn_call_matches_dense_for_causal_plus_padding(causal):
    """The cuDNN backend's exact call with implementation="xla" (no GPU here): the padding as
    sequence lengths reproduces the mask on every real row."""
    B, L, N, H = 2, 24, 2, 8
    q, k, v = _qkv(B, L, N, H, seed=5)
    seg = jnp.asarray([[1] * 17 + [0] * 7, [1] * 24], jnp.int32)
    mask = SegmentMask(seg, causal=causal, packed=False)
    out = cudnn_attention(q, k, v, mask, implementation="xla")
    ref = dense_attention(q, k, v, mask.dense())
    real = np.asarray(seg > 0)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=FWD_TOL)


def _choice(requested, platform, **kw):
    args = dict(length=2048, causal=True, packed=True, has_bias=False, head_dim=128)
    args["dtype"] = kw.pop("dtype", jnp.bfloat16)
    args.update(kw)
    return choose(requested, platform, **args).backend


def test_chooser():
    # auto: splash on TPU, cuDNN on GPU only where it can express the mask
    assert _choice("auto", "tpu") == "splash"
    assert _choice("auto", "tpu", causal=False) == "splash"
    assert _choice("auto", "gpu", packed=False) == "cudnn"
    assert _choice("auto", "gpu", packed=False, causal=False) == "cudnn"
    assert _choice("auto", "gpu") == "blockwise"  # packed segments: cuDNN cannot, L >= 1024
    assert _choice("auto", "gpu", length=256) == "dense"
    assert _choice("auto", "gpu", packed=False, head_dim=256) == "blockwise"
    assert _choice("auto", "gpu", packed=False, dtype=jnp.float32, length=512) == "dense"
    # CPU: blockwise for long rows, dense for short ones
    assert _choice("auto", "cpu") == "blockwise"
    assert _choice("auto", "cpu", length=256) == "dense"
    # what splash cannot serve: a relative position bias, L not a multiple of 128 on TPU
    assert _choice("auto", "tpu", has_bias=True, length=640) == "dense"
    assert _choice("auto", "tpu", length=2000) == "blockwise"
    assert _choice("splash", "cpu", length=128) == "splash"  # the interpreter (tests)
    assert _choice("splash", "cpu", length=64) == "dense"  # key blocks are 128-lane tiles
    assert _choice("splash", "gpu") == "blockwise"
    assert _choice("cudnn", "tpu", length=64) == "dense"
    # explicit choices are taken as they are
    assert (
        _choice("dense", "tpu") == "dense" and _choice("blockwise", "cpu", length=8) == "blockwise"
    )
    with pytest.raises(ValueError, match="model.attention='flash'"):
        _choice("flash", "cpu")


def test_resolve_logs_each_choice_once(monkeypatch):
    lines = []
    monkeypatch.setattr(attention.logging, "info", lines.append)
    monkeypatch.setattr(attention, "_logged", set())
    cfg = model_config(testing.micro_config()).decoder
    mask = SegmentMask(jnp.ones((1, 64), jnp.int32), causal=True)
    for _ in range(3):
        assert attention.resolve("auto", "decoder", mask, False, cfg) == "dense"
    assert attention.resolve("blockwise", "decoder", mask, False, cfg) == "blockwise"
    assert lines == [
        "attention decoder: dense (no fused kernel on cpu; L=64 < 1024: dense is fastest)",
        "attention decoder: blockwise (model.attention)",
    ]


SPANS = SpanConfig(4, 8, 0.25, 24)


def _micro(backend, seq_len=64, **decoder):
    cfg = testing.micro_config()
    cfg.data.seq_len = cfg.model.decoder.max_len = seq_len
    cfg.model.attention = backend
    cfg.model.decoder.update(decoder)
    return MetaLM(model_config(cfg)), cfg


def _loss_and_grads(model, params, batch):
    def loss(p):
        logits, _ = model.apply({"params": p}, batch)
        lp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(lp, batch.targets[..., None], -1)[..., 0]
        return jnp.sum(nll * batch.loss_weights)

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
@pytest.mark.parametrize(
    "backend,decoder", [("blockwise", {}), ("blockwise", {"scan": True, "remat": "full"})]
)
def test_model_with_blockwise_matches_dense(backend, decoder, monkeypatch):
    monkeypatch.setattr(attention, "BLOCK", 16)  # several blocks in the 64-token decoder rows
    dense, cfg = _micro("dense", **decoder)
    fast, _ = _micro(backend, **decoder)
    batch = Batch.from_dict(testing.random_batch(2, 64, cfg.data.vocab_size, SPANS))
    params = jax.jit(dense.init)(jax.random.key(0), batch)["params"]
    ref_logits = jax.jit(dense.apply)({"params": params}, batch)[0]
    logits = jax.jit(fast.apply)({"params": params}, batch)[0]
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
    (ref_loss, ref_g), (got_loss, got_g) = (
        _loss_and_grads(m, params, batch) for m in (dense, fast)
    )
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    for g, r in zip(jax.tree.leaves(got_g), jax.tree.leaves(ref_g), strict=True):
        np.testing.assert_allclose(g, r, atol=GRAD_TOL, rtol=0)


@pytest.mark.slow
def test_model_with_splash_matches_dense_in_interpret_mode():
    """The decoder (128 positions, causal + segments) through splash; the text encoder has a
    relative position bias, which splash cannot take: it falls back to dense."""
    dense, cfg = _micro("dense", 128)
    fast, _ = _micro("splash", 128)
    batch = Batch.from_dict(testing.random_batch(2, 128, cfg.data.vocab_size, SPANS))
    params = jax.jit(dense.init)(jax.random.key(0), batch)["params"]
    real = np.asarray(batch.segment_ids > 0)
    ref = np.asarray(dense.apply({"params": params}, batch)[0])
    got = np.asarray(fast.apply({"params": params}, batch)[0])
    np.testing.assert_allclose(got[real], ref[real], atol=1e-4, rtol=0)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
@pytest.mark.parametrize("backend", ["blockwise", "splash"])
def test_kv_cache_decoding_reproduces_each_backends_full_forward(backend, monkeypatch):
    """Decoding is always the dense KV-cache path; prefill + extension must give the logits of
    the full forward pass run with the backend."""
    monkeypatch.setattr(attention, "BLOCK", 32)
    L = 128
    model, cfg = _micro(backend, L)
    row = testing.random_rows(1, L, cfg.data.vocab_size, seed=3, docs_per_row=2)[0]
    row["segment_ids"][:] = 1
    row["positions"][:] = np.arange(L)
    ex = build_example(row, [(5, 12), (20, 28)], SPANS)
    batch = Batch.from_dict({k: v[None] for k, v in ex.items()})
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    full = np.asarray(model.apply({"params": params}, batch)[0])
    P = L - 6
    prompt = jax.tree.map(lambda x: x[:, :P] if x.shape[1] == L else x, batch)
    cache = decode.init_cache(model, prompt, L)
    logits, cache = decode._apply(model, params, cache, prompt, True)
    got = [np.asarray(logits)]
    for t in range(P, L):
        step = decode._step_batch(
            prompt, jnp.asarray(batch.tokens[:, t]), jnp.asarray(batch.positions[:, t])
        )
        logits, cache = decode._apply(model, params, cache, step, False)
        got.append(np.asarray(logits))
    got = np.concatenate(got, axis=1)
    assert np.max(np.abs(got - full)) / np.max(np.abs(full)) <= 1e-5
