"""Masks, slot gather, encoder isolation, causality and output shapes (tiny model)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.model.build import model_config
from metalm_jax.model.masks import make_attention_mask
from metalm_jax.model.metalm import MetaLM, gather_slots
from metalm_jax.types import Batch

SPANS = SpanConfig(4, 8, 0.25, 24)


def naive_mask(seg_q, seg_k, causal):
    b, L = seg_q.shape
    S = seg_k.shape[1]
    out = np.zeros((b, 1, L, S), bool)
    for i in range(b):
        for q in range(L):
            for k in range(S):
                ok = seg_q[i, q] == seg_k[i, k] and seg_q[i, q] > 0
                if causal:
                    ok = ok and k <= q
                out[i, 0, q, k] = ok
    return out


@pytest.mark.parametrize("causal", [True, False])
def test_mask_matches_naive_reference(causal):
    rng = np.random.default_rng(0)
    seg = np.sort(rng.integers(0, 4, (3, 12)), axis=1)[:, ::-1].copy().astype(np.int32)
    np.testing.assert_array_equal(
        np.asarray(make_attention_mask(seg, seg, causal)), naive_mask(seg, seg, causal)
    )


def test_gather_slots_writes_every_slot_from_the_bank():
    B, L, M, D = 2, 6, 5, 3
    emb = jnp.full((B, L, D), -7.0)  # poison: any unwritten slot would keep it
    bank = jnp.arange(B * M * D, dtype=jnp.float32).reshape(B, M, D)
    slot = jnp.array([[-1, 4, 0, -1, 2, -1], [1, 1, -1, 3, -1, 0]], jnp.int32)
    out = np.asarray(gather_slots(emb, bank, slot))
    for b in range(B):
        for l in range(L):
            expect = bank[b, slot[b, l]] if slot[b, l] >= 0 else emb[b, l]
            np.testing.assert_array_equal(out[b, l], expect)


@pytest.fixture(scope="module")
def tiny():
    cfg = testing.micro_config()
    model = MetaLM(model_config(cfg))
    batch = Batch.from_dict(testing.random_batch(2, 64, cfg.data.vocab_size, SPANS))
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    apply = jax.jit(lambda p, b: model.apply({"params": p}, b))
    return cfg, model, params, batch, apply


def test_output_shapes_and_aux(tiny):
    cfg, _, params, batch, apply = tiny
    logits, aux = apply(params, batch)
    assert logits.shape == (2, 64, cfg.data.vocab_size) and logits.dtype == jnp.float32
    assert aux["slot_bank"].shape == (2, 24, 32)
    assert aux["decoder_out"].shape == (2, 64, 32)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_slot_positions_ignore_their_token_ids(tiny):
    _, _, params, batch, apply = tiny
    slots = batch.slot_index >= 0
    changed = batch.replace(tokens=np.where(slots, 7, batch.tokens).astype(np.int32))
    np.testing.assert_allclose(apply(params, batch)[0], apply(params, changed)[0], atol=1e-6)


def test_decoder_is_causal_and_segments_are_isolated(tiny):
    _, _, params, batch, apply = tiny
    base = np.asarray(apply(params, batch)[0])
    # change the last text token of row 0's first segment: earlier positions must not move,
    # nor may any position of the other segments
    seg = batch.segment_ids[0]
    text = np.where((seg == 1) & (batch.slot_index[0] < 0))[0]
    t = int(text[-1])
    tokens = batch.tokens.copy()
    tokens[0, t] = (tokens[0, t] + 1) % 300 + 5
    out = np.asarray(apply(params, batch.replace(tokens=tokens))[0])
    np.testing.assert_allclose(out[0, :t], base[0, :t], atol=1e-5)
    np.testing.assert_allclose(out[0, seg != 1], base[0, seg != 1], atol=1e-5)
    assert np.abs(out[0, t] - base[0, t]).max() > 1e-4
    np.testing.assert_allclose(out[1], base[1], atol=1e-5)


def test_encoder_spans_are_isolated(tiny):
    cfg, model, params, batch, _ = tiny
    enc = jax.jit(lambda p, b: model.apply({"params": p}, b, method=MetaLM.encode))
    bank = np.asarray(enc(params, batch))
    seg = batch.enc_segment_ids[0]
    assert seg.max() >= 2, "need two spans in row 0"
    toks = batch.enc_tokens.copy()
    first = np.where(seg == 1)[0]
    toks[0, first[-1]] = (toks[0, first[-1]] + 1) % 300 + 5
    out = np.asarray(enc(params, batch.replace(enc_tokens=toks)))
    np.testing.assert_allclose(out[0, seg == 2], bank[0, seg == 2], atol=1e-5)
    assert np.abs(out[0, first[0]] - bank[0, first[0]]).max() > 1e-4  # bidirectional inside


@pytest.mark.slow  # 6-13 s (default tier: tests/conftest.py)
def test_pre_ln_and_post_ln_variants_build():
    cfg = testing.micro_config()
    mc = model_config(cfg)
    batch = Batch.from_dict(testing.random_batch(1, 64, cfg.data.vocab_size, SPANS))
    for norm in ("pre", "post"):
        m = MetaLM(dataclasses.replace(mc, decoder=dataclasses.replace(mc.decoder, norm=norm)))
        logits, _ = m.apply(m.init(jax.random.key(1), batch), batch)
        assert np.all(np.isfinite(np.asarray(logits)))


def test_deepnorm_constants_can_be_set_one_at_a_time():
    """model.decoder.deepnorm_alpha / deepnorm_beta replace DeepNet's formulas (0 keeps them);
    beta = 1 initialises the value/output/MLP weights at their plain Xavier size."""
    cfg = testing.micro_config()
    cfg.model.decoder.norm = "deepnorm"
    n = cfg.model.decoder.num_layers
    dec = model_config(cfg).decoder
    assert dec.alpha == pytest.approx((2 * n) ** 0.25) and dec.beta == pytest.approx(
        (8 * n) ** -0.25
    )
    cfg.model.decoder.deepnorm_beta = 1.0
    only_alpha = model_config(cfg).decoder
    assert only_alpha.alpha == dec.alpha and only_alpha.beta == 1.0
    batch = Batch.from_dict(testing.random_batch(1, 64, cfg.data.vocab_size, SPANS))

    def wo_std(mc):
        params = nn.unbox(jax.jit(MetaLM(mc).init)(jax.random.key(0), batch)["params"])
        return float(np.std(np.asarray(params["decoder"]["layers_0"]["mlp"]["wo"])))

    ratio = wo_std(model_config(cfg)) / wo_std(dataclasses.replace(model_config(cfg), decoder=dec))
    assert ratio == pytest.approx(1 / dec.beta, rel=0.05)
    cfg.model.decoder.deepnorm_alpha, cfg.model.decoder.deepnorm_beta = 1.0, 0.0
    only_beta = model_config(cfg).decoder
    assert only_beta.alpha == 1.0 and only_beta.beta == dec.beta
