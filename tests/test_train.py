"""Optimizer groups, the pure train step, and the Orbax checkpoint round trip."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.feed import pipeline
from metalm_jax.data.spans import SpanConfig
from metalm_jax.model.build import derive, model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.optimizer import make_optimizer, param_path
from metalm_jax.training.step import TrainState, train_step
from metalm_jax.types import Batch


def _setup(cfg):
    model = MetaLM(model_config(cfg))
    batch = Batch.from_dict(
        testing.random_batch(4, 64, cfg.data.vocab_size, SpanConfig(4, 8, 0.25, 24))
    )
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])
    tx, groups = make_optimizer(cfg.optim, cfg.train.steps, params)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, seed=0))
    return model, batch, state, step, groups


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_train_steps_lower_the_loss_and_freeze_what_is_frozen():
    cfg = testing.micro_config()
    cfg.train.steps = 100
    _, batch, state, step, groups = _setup(cfg)
    assert groups["frozen"] > 0
    first = state
    losses = []
    for _ in range(12):
        state, m = step(state, batch)
        losses.append(float(m["loss_sum"] / m["weight"]))
    assert losses[-1] < losses[0] - 0.5, losses
    for path, old in jax.tree_util.tree_leaves_with_path(first.params):
        new = state.params
        for k in path:
            new = new[k.key]
        frozen = param_path(path).startswith("text_encoder/stack/layers_0/")
        assert np.array_equal(np.asarray(old), np.asarray(new)) == frozen, param_path(path)


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
def test_unknown_frozen_pattern_is_an_error():
    cfg = testing.micro_config()
    cfg.optim.frozen = [r"^text_encoder/stack/layers_9/"]
    with pytest.raises(ValueError, match=r"match no parameter.*layers_9"):
        _setup(cfg)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_lr_multiplier_zero_keeps_its_group():
    cfg = testing.micro_config()
    cfg.optim.frozen = []
    cfg.optim.lr_multipliers = ((r"^connector/", 0.0),)
    _, batch, state, step, groups = _setup(cfg)
    assert groups["mult_0"] == 2
    new, _ = step(*step(state, batch)[:1], batch)  # step 0 has LR 0 (warm-up)
    np.testing.assert_array_equal(
        new.params["connector"]["kernel"], state.params["connector"]["kernel"]
    )
    assert not np.array_equal(
        new.params["decoder"]["layers_0"]["mlp"]["wi"],
        state.params["decoder"]["layers_0"]["mlp"]["wi"],
    )


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_checkpoint_restores_identical_state_and_next_batch(corpus, tmp_path):
    cfg, tok = corpus
    _, _, state, step, _ = _setup(cfg)
    it = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    for _ in range(3):
        state, _ = step(state, Batch.from_dict(next(it)))
    ckpt = Checkpointer(str(tmp_path), every=1, keep=2)
    ckpt.save(3, state, it, cfg.to_dict(), force=True)
    ckpt.close()
    expected_next = next(it)

    fresh = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    assert not np.array_equal(next(fresh)["tokens"], expected_next["tokens"])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    ckpt = Checkpointer(str(tmp_path), every=1, keep=2)
    assert ckpt.latest_step() == 3
    restored = ckpt.restore(3, abstract, fresh, cfg.to_dict())
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    got = next(fresh)
    for k in expected_next:
        np.testing.assert_array_equal(got[k], expected_next[k], err_msg=k)

    other = cfg.to_dict()
    other["model"]["decoder"]["d_model"] = 64
    with pytest.raises(ValueError, match="model.decoder.d_model: checkpoint 32, config 64"):
        ckpt.restore(3, abstract, fresh, other)
    ckpt.close()


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_stop_gradient_on_frozen_parameters_changes_no_update():
    """The trainer's `frozen` mask (no backward work below frozen layers) gives exactly the
    update of the plain step, where set_to_zero alone drops the frozen gradients."""
    from metalm_jax.model.build import frozen_bottom_layers
    from metalm_jax.training.optimizer import group_labels

    cfg = testing.micro_config()
    cfg.optim.frozen = [r"^text_encoder/(token_embed|pos_embed|rel_bias|stack/layers_0)/"]
    model, batch, state, plain, _ = _setup(cfg)
    labels, _ = group_labels(state.params, list(cfg.optim.frozen), ())
    frozen = jax.tree.map(lambda lab: lab == "frozen", labels)
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps, state.params)
    masked = jax.jit(functools.partial(train_step, model=model, tx=tx, seed=0, frozen=frozen))
    a, ma = plain(state, batch)
    b, mb = masked(state, batch)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    # grad_norm now covers the trained parameters only (what the clip sees, too)
    assert float(mb["grad_norm"]) < float(ma["grad_norm"])
    assert frozen_bottom_layers(cfg, "text_encoder", 2) == 1
    cfg.optim.frozen = [r"^text_encoder/stack/layers_0/"]  # embeddings train: full backward
    assert frozen_bottom_layers(cfg, "text_encoder", 2) == 0
