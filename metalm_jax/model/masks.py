"""Attention masks from per-token annotations, built inside jit. The only place masks are made.

Every mask of a full sequence reduces to (segment ids, causal flag), `make_attention_mask`:
  * decoder: causal AND same segment (packing; encoder slots are ordinary positions);
  * text encoder: same segment (each span is its own segment, bidirectional inside);
  * vision encoder: same segment, with segment 1 = the image and its real prefix tokens.
Decoding with a KV cache appends new positions to the cached ones; `cache_attention_mask` gives
their mask over the whole cache (causal over cache indices, both sides real).
Segment 0 is padding and attends to nothing (its rows are fully masked; their outputs carry no
loss). Worked example, segment_ids = [1 1 2 2 0], causal=True (1 = may attend):

          k: 1 1 2 2 0
    q 1:     1 . . . .
    q 1:     1 1 . . .
    q 2:     . . 1 . .
    q 2:     . . 1 1 .
    q 0:     . . . . .

With causal=False the two 1-rows and the two 2-rows are full inside their own block.

The fast attention kernels (model/attention.py) never see that [B, 1, L, S] array: the model
hands the stacks a `SegmentMask`, the same facts kept structural (segment ids + causal flag),
and only the dense backend expands it with `make_attention_mask`.
"""

from __future__ import annotations

import flax.struct
import jax
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


@flax.struct.dataclass
class SegmentMask:
    """A full-sequence self-attention mask kept structural: query l may attend to key s iff
    segment_ids[l] == segment_ids[s] > 0 (and s <= l when `causal`).

    segment_ids int32[B, L] (0 = padding). `packed` is what the data promises: False only when
    every row holds one segment with its real positions first (padding, segment 0, at the
    end), which a length-based kernel (cuDNN's padding mask) can express; True allows any
    number of segments per row. `dense()` is the boolean mask the dense path uses.
    """

    segment_ids: jax.Array
    causal: bool = flax.struct.field(pytree_node=False, default=False)
    packed: bool = flax.struct.field(pytree_node=False, default=True)

    def dense(self):
        """bool[B, 1, L, L] (make_attention_mask)."""
        return make_attention_mask(self.segment_ids, self.segment_ids, self.causal)

    def lengths(self):
        """int32[B]: real positions per row (meaningful when not `packed`)."""
        return jnp.sum(self.segment_ids > 0, axis=1, dtype=jnp.int32)


def cache_attention_mask(new_valid, cache_valid, index):
    """bool[B, 1, T, S]: True where new position t, written at cache index `index` + t, may attend
    to cache slot s: s <= index + t, and both are real (left padding and unwritten slots are not).

    new_valid bool[B, T]; cache_valid bool[B, S], the cache's validity with the new positions
    already written; index int32[] (traced). Worked example: a prompt left-padded to 3 (one pad)
    is prefilled into a cache of length 5 (index 0, T = 3), then one token is appended (index 3):

        prefill: new_valid [0 1 1], cache_valid [0 1 1 0 0]
              s: 0 1 2 3 4
        t 0:     . . . . .      (padding attends to nothing)
        t 1:     . 1 . . .
        t 2:     . 1 1 . .
        append: new_valid [1], cache_valid [0 1 1 1 0]
        t 0:     . 1 1 1 .
    """
    T, S = new_valid.shape[1], cache_valid.shape[1]
    causal = jnp.arange(S)[None, :] <= (index + jnp.arange(T))[:, None]  # [T, S]
    return causal[None, None] & cache_valid[:, None, None, :] & new_valid[:, None, :, None]
