"""Blockwise (flash-style) self-attention in pure JAX: the CPU path and the fallback everywhere.

Queries and keys are cut into blocks of `block` positions. The forward pass walks, for each
query block, the key blocks with an online softmax (running max m, normaliser l, accumulator);
the backward pass (a custom VJP, FlashAttention-2 style) recomputes each block's probabilities
from the saved log-sum-exp, so what is kept for the backward is O(L) (q, k, v, output, lse) and
the largest temporary is one [B, N, block, block] tile: memory O(L * block), never [B, N, L, L].

A block pair is skipped (lax.cond, no FLOPs) when no row of the batch can attend from the query
block to the key block: above the diagonal when causal (the loops never visit it), or when the
ranges of the two blocks' real segment ids do not overlap in any row. Worked example, one row,
causal, block 2 (query block i = rows, key block j = columns; r = run, . = skipped):

    segment_ids  1 1 | 2 2 | 2 3 | 0 0        j: 0 1 2 3
    real ids per block: {1} {2} {2,3} {}     i 0: r . . .   (1,2,3: above the diagonal)
                                             i 1: . r . .   ({2} vs {1}: no overlap)
                                             i 2: . r r .
                                             i 3: . . . .   (padding: no real ids)

Rows with no key to attend (segment 0, padding) come out 0 here; attention.attend gives them
the dense path's value. Logits, softmax and the accumulators are float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from metalm_jax.model.masks import MASK_VALUE

_BIG = jnp.iinfo(jnp.int32).max


def blockwise_attention(q, k, v, segment_ids, causal: bool, bias=None, *, block: int = 128):
    """q, k, v [B, L, N, H] (compute dtype), segment_ids int32[B, L], bias float32[B, N, L, L]
    or None -> [B, L, N, H]: softmax(q k^T / sqrt(H) + bias) v over the SegmentMask of
    (segment_ids, causal) (masks.py). L need not divide by `block` (padded inside)."""
    B, L, N, H = q.shape
    bs = min(block, L)
    pad = -L % bs
    if pad:
        grow = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        q, k, v, segment_ids = grow(q), grow(k), grow(v), grow(segment_ids)
        if bias is not None:
            bias = jnp.pad(bias, [(0, 0), (0, 0), (0, pad), (0, pad)])
    out = _attention(q, k, v, bias, segment_ids, causal, bs)
    return out[:, :L]


def _block_ranges(segment_ids, bs):
    """Per block, the smallest and largest real segment id: int32[B, nb] each (an all-padding
    block gets an empty range, lo > hi)."""
    B, Lp = segment_ids.shape
    seg = segment_ids.reshape(B, Lp // bs, bs)
    lo = jnp.min(jnp.where(seg > 0, seg, _BIG), axis=-1)
    hi = jnp.max(jnp.where(seg > 0, seg, 0), axis=-1)
    return lo, hi


def _live(ranges, i, j):
    """Whether any row may attend from query block i to key block j (causality is handled by
    the loop bounds)."""
    lo, hi = ranges
    return jnp.any((lo[:, i] <= hi[:, j]) & (lo[:, j] <= hi[:, i]))


def _tile(x, i, bs, axis=1):
    return jax.lax.dynamic_slice_in_dim(x, i * bs, bs, axis=axis)


def _logits(q_blk, k_blk, seg_q, seg_k, bias, i, j, bs, causal):
    """float32[B, N, bs, bs] scaled logits (+ bias) with masked entries at MASK_VALUE, and the
    bool[B, 1, bs, bs] mask."""
    H = q_blk.shape[-1]
    s = jnp.einsum("BLNH,BSNH->BNLS", q_blk, k_blk, preferred_element_type=jnp.float32)
    s = s * (1.0 / math.sqrt(H))
    if bias is not None:
        s = s + _tile(_tile(bias, i, bs, axis=2), j, bs, axis=3)
    mask = (seg_q[:, :, None] == seg_k[:, None, :]) & (seg_q[:, :, None] > 0)
    if causal:
        mask &= (i * bs + jnp.arange(bs))[:, None] >= (j * bs + jnp.arange(bs))[None, :]
    mask = mask[:, None]
    return jnp.where(mask, s, MASK_VALUE), mask


def _forward(q, k, v, bias, segment_ids, causal, bs):
    """(out [B, Lp, N, H] in q's dtype, lse float32[B, N, Lp])."""
    B, Lp, N, H = q.shape
    nb = Lp // bs
    ranges = _block_ranges(segment_ids, bs)

    def query_block(i):
        q_blk, seg_q = _tile(q, i, bs), _tile(segment_ids, i, bs)

        def key_block(j, carry):
            def run(carry):
                m, l, acc = carry
                k_blk, v_blk, seg_k = _tile(k, j, bs), _tile(v, j, bs), _tile(segment_ids, j, bs)
                s, mask = _logits(q_blk, k_blk, seg_q, seg_k, bias, i, j, bs, causal)
                m_new = jnp.maximum(m, jnp.max(s, axis=-1))
                p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
                corr = jnp.exp(m - m_new)
                pv = jnp.einsum(
                    "BNLS,BSNH->BNLH", p.astype(v.dtype), v_blk, preferred_element_type=jnp.float32
                )
                return m_new, l * corr + jnp.sum(p, axis=-1), acc * corr[..., None] + pv

            return jax.lax.cond(_live(ranges, i, j), run, lambda c: c, carry)

        init = (
            jnp.full((B, N, bs), MASK_VALUE, jnp.float32),
            jnp.zeros((B, N, bs), jnp.float32),
            jnp.zeros((B, N, bs, H), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(0, i + 1 if causal else nb, key_block, init)
        seen = l > 0
        out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
        lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
        return out.astype(q.dtype), lse

    out, lse = jax.lax.map(query_block, jnp.arange(nb))  # [nb, B, N, bs, H], [nb, B, N, bs]
    out = jnp.einsum("IBNLH->BILNH", out).reshape(B, Lp, N, H)
    lse = jnp.einsum("IBNL->BNIL", lse).reshape(B, N, Lp)
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, bias, segment_ids, causal, bs):
    return _forward(q, k, v, bias, segment_ids, causal, bs)[0]


def _attention_fwd(q, k, v, bias, segment_ids, causal, bs):
    out, lse = _forward(q, k, v, bias, segment_ids, causal, bs)
    return out, (q, k, v, bias, segment_ids, out, lse)


def _attention_bwd(causal, bs, res, d_out):
    q, k, v, bias, segment_ids, out, lse = res
    B, Lp, N, H = q.shape
    nb = Lp // bs
    scale = 1.0 / math.sqrt(H)
    ranges = _block_ranges(segment_ids, bs)
    # FlashAttention-2's D = rowsum(dO * O): the softmax backward's per-row term
    delta = jnp.einsum("BLNH,BLNH->BNL", d_out.astype(jnp.float32), out.astype(jnp.float32))

    def key_block(dq, j):
        k_blk, v_blk, seg_k = _tile(k, j, bs), _tile(v, j, bs), _tile(segment_ids, j, bs)

        def query_block(i, carry):
            def run(carry):
                dq, dk, dv, dbias = carry
                q_blk, do_blk = _tile(q, i, bs), _tile(d_out, i, bs)
                seg_q = _tile(segment_ids, i, bs)
                s, mask = _logits(q_blk, k_blk, seg_q, seg_k, bias, i, j, bs, causal)
                p = jnp.where(mask, jnp.exp(s - _tile(lse, i, bs, axis=2)[..., None]), 0.0)
                f32 = dict(preferred_element_type=jnp.float32)
                dv = dv + jnp.einsum("BNLS,BLNH->BSNH", p.astype(v.dtype), do_blk, **f32)
                dp = jnp.einsum("BLNH,BSNH->BNLS", do_blk, v_blk, **f32)
                ds = p * (dp - _tile(delta, i, bs, axis=2)[..., None])  # d(logits)
                dk = dk + scale * jnp.einsum("BNLS,BLNH->BSNH", ds.astype(q.dtype), q_blk, **f32)
                dq_blk = scale * jnp.einsum("BNLS,BSNH->BLNH", ds.astype(k.dtype), k_blk, **f32)
                dq = jax.lax.dynamic_update_slice_in_dim(
                    dq, _tile(dq, i, bs) + dq_blk, i * bs, axis=1
                )
                if dbias is not None:
                    dbias = jax.lax.dynamic_update_slice_in_dim(dbias, ds, i * bs, axis=2)
                return dq, dk, dv, dbias

            return jax.lax.cond(_live(ranges, i, j), run, lambda c: c, carry)

        zeros = jnp.zeros((B, bs, N, H), jnp.float32)
        dbias = None if bias is None else jnp.zeros((B, N, Lp, bs), jnp.float32)
        dq, dk, dv, dbias = jax.lax.fori_loop(
            j if causal else 0, nb, query_block, (dq, zeros, zeros, dbias)
        )
        return dq, (dk, dv, dbias)

    dq, (dk, dv, dbias) = jax.lax.scan(
        key_block, jnp.zeros((B, Lp, N, H), jnp.float32), jnp.arange(nb)
    )
    join = lambda x: jnp.einsum("JBSNH->BJSNH", x).reshape(B, Lp, N, H)
    dk, dv = join(dk), join(dv)
    if bias is not None:  # [nb, B, N, Lp, bs] -> [B, N, Lp, Lp]
        dbias = jnp.einsum("JBNLS->BNLJS", dbias).reshape(B, N, Lp, Lp).astype(bias.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias, None


_attention.defvjp(_attention_fwd, _attention_bwd)
