"""train.fused_xent: the loss without [B, L, V] logits kept has the same value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.model.build import model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.training.step import fused_nll_sum, loss_sums, token_nll
from metalm_jax.types import Batch


def test_fused_nll_sum_matches_log_softmax_value_and_gradients():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(k1, (24, 16))
    emb = jax.random.normal(k2, (50, 16))
    targets = jax.random.randint(k3, (24,), 0, 50)
    weights = (jax.random.uniform(k4, (24,)) > 0.3).astype(jnp.float32) * 2.0  # zeros and 2s

    def ref(h, emb):
        return jnp.sum(token_nll(h @ emb.T, targets) * weights)

    fused = lambda h, emb: fused_nll_sum(h, emb, targets, weights)
    np.testing.assert_allclose(fused(h, emb), ref(h, emb), rtol=1e-5)
    got, want = jax.grad(fused, (0, 1))(h, emb), jax.grad(ref, (0, 1))(h, emb)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)
    assert float(jnp.abs(got[0][weights == 0]).max()) == 0.0  # padding gets no gradient


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_model_loss_fused_matches_unfused():
    """The whole MetaLM (text encoder, spans, padding) with the tied head: loss_sums with and
    without `fused` agree in the loss sum, the weight sum and every parameter gradient."""
    cfg = testing.micro_config()
    model = MetaLM(model_config(cfg))
    batch = Batch.from_dict(
        testing.random_batch(2, 64, cfg.data.vocab_size, SpanConfig(4, 8, 0.25, 24))
    )
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]

    def run(fused):
        def f(p):
            s, w, _ = loss_sums(model, p, batch, fused=fused)
            return s, w

        return jax.value_and_grad(f, has_aux=True)(params)

    (s0, w0), g0 = run(False)
    (s1, w1), g1 = run(True)
    assert float(w1) == float(w0) and float(w0) < batch.tokens.size  # some positions padded
    np.testing.assert_allclose(s1, s0, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
