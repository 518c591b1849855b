"""Same numbers on any mesh (8 simulated CPU devices, in a subprocess so XLA_FLAGS applies),
gradient accumulation exactness, scan and remat equivalence."""

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.model.build import model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.parallel.mesh import resolve_shape
from metalm_jax.training.optimizer import make_optimizer
from metalm_jax.training.step import TrainState, train_step
from metalm_jax.types import Batch
from tests import _procs

HERE = os.path.dirname(os.path.abspath(__file__))
SPANS = SpanConfig(4, 8, 0.25, 24)


def test_resolve_shape_fills_one_auto_axis():
    assert resolve_shape((-1, 2, 1), 8) == (4, 2, 1)
    assert resolve_shape((2, 2, 2), 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one -1"):
        resolve_shape((-1, -1, 1), 8)
    with pytest.raises(ValueError, match="needs 4 devices, have 8"):
        resolve_shape((2, 2, 1), 8)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_same_update_on_every_mesh(scan):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": _procs.xla_flags(8)}
    args = [sys.executable, os.path.join(HERE, "_mesh_worker.py")] + (["--scan"] if scan else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out["devices"] == 8
    assert len(out["meshes"]) == (1 if scan else 4)
    for shape, r in out["meshes"].items():
        assert r["loss_rel"] <= 1e-5, (shape, r)
        assert r["param_rel_l2"] <= 1e-5, (shape, r)
        # Per leaf, zero-initialised biases after their first Adam steps are only ~lr in size
        # and Adam divides float32 reduction-order noise by |g| + eps: seen up to ~1e-4.
        assert r["leaf_rel_max"] <= 1e-3, (shape, r)


def _one_step(cfg, batch, accum):
    model = MetaLM(model_config(cfg))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps, params)
    state = TrainState(jnp.ones((), jnp.int32), params, tx.init(params))  # step 1: LR > 0
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, seed=0, accum=accum))
    new, m = step(state, batch)
    return new.params, m


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_gradient_accumulation_matches_one_big_batch():
    cfg = testing.micro_config()
    batch = Batch.from_dict(testing.random_batch(8, 64, cfg.data.vocab_size, SPANS, seed=4))
    p1, m1 = _one_step(cfg, batch, accum=1)
    p4, m4 = _one_step(cfg, batch, accum=4)
    np.testing.assert_allclose(float(m4["loss_sum"]), float(m1["loss_sum"]), rtol=1e-5)
    assert float(m4["weight"]) == float(m1["weight"])
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_scan_and_remat_give_the_unrolled_numbers():
    cfg = testing.micro_config()
    batch = Batch.from_dict(testing.random_batch(2, 64, cfg.data.vocab_size, SPANS))
    base = MetaLM(model_config(cfg))
    params = nn.unbox(base.init(jax.random.key(0), batch)["params"])
    ref = base.apply({"params": params}, batch)[0]
    dec = params["decoder"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[dec[f"layers_{i}"] for i in range(2)])
    for remat in ("none", "full", "minimal"):
        cfg.model.decoder.scan, cfg.model.decoder.remat = True, remat
        model = MetaLM(model_config(cfg))
        p = dict(params, decoder={"layers": stacked})
        out, grads = jax.value_and_grad(
            lambda p, m=model: jnp.sum(m.apply({"params": p}, batch)[0] ** 2) * 1e-6
        )(p)
        np.testing.assert_allclose(
            float(out), float(jnp.sum(ref**2) * 1e-6), rtol=1e-5, err_msg=remat
        )
        assert np.all(np.isfinite(np.asarray(grads["decoder"]["layers"]["mlp"]["wi"])))
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):
        cfg.model.decoder.remat = "bogus"
        MetaLM(model_config(cfg)).init(jax.random.key(0), batch)


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
def test_bfloat16_compute_with_scanned_post_ln_stack():
    cfg = testing.micro_config()
    cfg.model.dtype = "bfloat16"
    cfg.model.decoder.scan, cfg.model.decoder.remat = True, "full"
    batch = Batch.from_dict(testing.random_batch(2, 64, cfg.data.vocab_size, SPANS))
    model = MetaLM(model_config(cfg))
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    assert jax.tree.leaves(params)[0].dtype == jnp.float32  # params stay float32
    logits, _ = model.apply({"params": params}, batch)
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits)))
