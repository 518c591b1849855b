"""Pure train and eval steps, jitted in training/trainer.py, not here nor in the loop (which only
calls the results): build_trainer jits train_step once per mesh with the state's and the batch's
shardings and the state donated, build_inference jits eval_step with the parameters' and the
batch's shardings. Kept pure (model, optimizer and options as arguments) so that one definition
serves every mesh, and tests can jit them bare on one device.

The loss travels as (sum of weighted token NLL, sum of weights) and is divided once, so packing,
padding rows, gradient accumulation and multi-host reductions stay exact.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
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


@jax.custom_vjp
def fused_nll_sum(h, embedding, targets, weights):
    """sum(weights * NLL(targets)) under the tied head logits = h @ embedding.T, without keeping
    the float32[N, V] logits for the backward: it recomputes them and forms the gradient
    directly (softmax - one-hot). float32 h [N, D], embedding [V, D], int32 targets [N],
    weights [N]. Same value and gradients as token_nll on the logits (train.fused_xent)."""
    return _fused_fwd(h, embedding, targets, weights)[0]


def _fused_fwd(h, embedding, targets, weights):
    logits = h @ embedding.T
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return jnp.sum((lse - target_logit) * weights), (h, embedding, targets, weights, lse)


def _fused_bwd(res, g):
    h, embedding, targets, weights, lse = res
    logits = h @ embedding.T
    d = jnp.exp(logits - lse[:, None]) - jax.nn.one_hot(targets, embedding.shape[0], dtype=h.dtype)
    d = d * (g * weights)[:, None]
    # (h^T d)^T, not d^T h: on XLA CPU the latter materializes d transposed ([V, N], the largest
    # array of the step); transposing h and the [D, V] result is 4x less data at D = V / 64
    d_embedding = (h.T @ d).T
    return d @ embedding, d_embedding, None, None


fused_nll_sum.defvjp(_fused_fwd, _fused_bwd)


def loss_sums(model, params, batch: Batch, *, rng=None, fused: bool = False):
    """(weighted NLL sum, weight sum, aux). Dropout is on when `rng` is given. `fused`: the
    loss through fused_nll_sum (no [B, L, V] logits kept), same value and gradients."""
    rngs = {"dropout": rng} if rng is not None else {}
    w = batch.loss_weights
    out, aux = model.apply(
        {"params": params}, batch, deterministic=rng is None, rngs=rngs, head=not fused
    )
    if fused:
        h = out.reshape(-1, out.shape[-1])
        emb = nn.unbox(params["embed"]["embedding"]).astype(jnp.float32)
        s = fused_nll_sum(h, emb, batch.targets.reshape(-1), w.reshape(-1).astype(jnp.float32))
        return s, jnp.sum(w), aux
    nll = token_nll(out, batch.targets)
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
    fused_xent: bool = False,
):
    """One optimizer step over `accum` microbatches (lax.scan).

    Gradients of the weighted NLL *sum* are accumulated and divided once by the total weight,
    so k microbatches give exactly the update of one batch k times as large. Returns
    (new state, metrics of sums to be divided on the host).

    `frozen` (a tree of bools like the params, from optim.frozen) marks parameters behind a
    stop_gradient: their gradients are zeros without any backward work, and layers below the
    lowest trained one (a frozen pretrained encoder's bottom) get no backward pass at all.

    metrics["finite"] (bool[]) says the loss, the gradient norm and the updated parameters are
    all finite; the loop reads it with the other metrics (training/guard.py). With
    `skip_nonfinite` (train.nonfinite="skip") a step that is not finite keeps the parameters and
    optimizer state it started from; the step counter still advances.
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def sums(params, micro, i):
        if frozen is not None:
            params = jax.tree.map(lambda x, f: jax.lax.stop_gradient(x) if f else x, params, frozen)
        s, w, _ = loss_sums(model, params, micro, rng=jax.random.fold_in(rng, i), fused=fused_xent)
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
