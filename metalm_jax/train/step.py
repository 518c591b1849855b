"""Pure train and eval steps. The loop jits them once with shardings and donation.

The loss travels as (sum of weighted token NLL, sum of weights) and is divided once, so packing,
padding rows, gradient accumulation and multi-host reductions stay exact.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from metalm_jax.types import Batch


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32[]
    params: Any
    opt_state: Any


def token_nll(logits, targets):
    """float32[B, L] negative log-likelihood of int32[B, L] targets under float32 logits."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def loss_sums(model, params, batch: Batch, *, rng=None):
    """(weighted NLL sum, weight sum, aux). Dropout is on when `rng` is given."""
    rngs = {"dropout": rng} if rng is not None else {}
    logits, aux = model.apply({"params": params}, batch, deterministic=rng is None, rngs=rngs)
    nll = token_nll(logits, batch.targets)
    w = batch.loss_weights
    return jnp.sum(nll * w), jnp.sum(w), aux


def train_step(state: TrainState, batch: Batch, *, model, tx, seed: int):
    """One optimizer step. Returns (new state, metrics of sums to be divided on the host)."""
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
        s, w, _ = loss_sums(model, params, batch, rng=rng)
        return s / jnp.maximum(w, 1.0), (s, w)

    grads, (s, w) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss_sum": s,
        "weight": w,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(params, batch: Batch, *, model):
    """(weighted NLL sum, weight sum) on one batch, no dropout."""
    s, w, _ = loss_sums(model, params, batch)
    return {"loss_sum": s, "weight": w}
