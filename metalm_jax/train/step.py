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


def all_finite(tree) -> jax.Array:
    """bool[]: every element of every leaf is finite (a reduction, no host sync)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model,
    tx,
    seed: int,
    accum: int = 1,
    frozen=None,
    skip_nonfinite: bool = False,
):
    """One optimizer step over `accum` microbatches (lax.scan).

    Gradients of the weighted NLL *sum* are accumulated and divided once by the total weight,
    so k microbatches give exactly the update of one batch k times as large. Returns
    (new state, metrics of sums to be divided on the host).

    `frozen` (a tree of bools like the params, from optim.frozen) marks parameters behind a
    stop_gradient: their gradients are zeros without any backward work, and layers below the
    lowest trained one (a frozen pretrained encoder's bottom) get no backward pass at all.

    metrics["finite"] (bool[]) says the loss, the gradient norm and the updated parameters are
    all finite; the loop reads it with the other metrics (train/guard.py). With
    `skip_nonfinite` (train.nonfinite="skip") a step that is not finite keeps the parameters and
    optimizer state it started from; the step counter still advances.
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def sums(params, micro, i):
        if frozen is not None:
            params = jax.tree.map(lambda x, f: jax.lax.stop_gradient(x) if f else x, params, frozen)
        s, w, _ = loss_sums(model, params, micro, rng=jax.random.fold_in(rng, i))
        return s, w

    def micro_grads(i, micro):
        (s, w), g = jax.value_and_grad(sums, has_aux=True)(state.params, micro, i)
        return g, s, w

    if accum == 1:
        g, s, w = micro_grads(0, batch)
    else:
        if batch.tokens.shape[0] % accum:
            raise ValueError(
                f"batch of {batch.tokens.shape[0]} rows is not divisible into "
                f"train.grad_accum_steps={accum} microbatches"
            )
        micro = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]), batch)

        def body(carry, xs):
            g, s, w = micro_grads(*xs)
            return jax.tree.map(jnp.add, carry, (g, s, w)), None

        zero = (jax.tree.map(jnp.zeros_like, state.params), jnp.zeros(()), jnp.zeros(()))
        (g, s, w), _ = jax.lax.scan(body, zero, (jnp.arange(accum), micro))
    grads = jax.tree.map(lambda x: x / jnp.maximum(w, 1.0), g)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(s) & jnp.isfinite(grad_norm) & all_finite(params)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    metrics = {
        "loss_sum": s,
        "weight": w,
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(params),
        "finite": finite,
    }
    return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(params, batch: Batch, *, model):
    """(weighted NLL sum, weight sum) on one batch, no dropout."""
    s, w, _ = loss_sums(model, params, batch)
    return {"loss_sum": s, "weight": w}
