"""Attention masks from per-token annotations, built inside jit. The only place masks are made.

Both MetaLM masks reduce to (segment ids, causal flag):
  * decoder: causal AND same segment (packing; encoder slots are ordinary positions);
  * encoder: same segment (each span is its own segment, bidirectional inside).
Segment 0 is padding and attends to nothing (its rows are fully masked; their outputs carry no
loss). Worked example, segment_ids = [1 1 2 2 0], causal=True (1 = may attend):

          k: 1 1 2 2 0
    q 1:     1 . . . .
    q 1:     1 1 . . .
    q 2:     . . 1 . .
    q 2:     . . 1 1 .
    q 0:     . . . . .

With causal=False the two 1-rows and the two 2-rows are full inside their own block.
"""

from __future__ import annotations

import jax.numpy as jnp

MASK_VALUE = -1e9  # finite, so a fully masked (padding) row gives a uniform softmax, never NaN


def make_attention_mask(q_segment_ids, kv_segment_ids, causal: bool):
    """bool[B, 1, L, S]: True where query l may attend to key s.

    q_segment_ids int32[B, L], kv_segment_ids int32[B, S]. Causality compares grid indices, which
    is right for the decoder grid (queries and keys are the same sequence).
    """
    q = q_segment_ids[:, :, None]
    k = kv_segment_ids[:, None, :]
    mask = (q == k) & (q > 0)
    if causal:
        length, s = q_segment_ids.shape[1], kv_segment_ids.shape[1]
        mask &= jnp.arange(length)[:, None] >= jnp.arange(s)[None, :]
    return mask[:, None, :, :]
