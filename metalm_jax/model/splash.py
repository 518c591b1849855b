"""Splash attention (Pallas TPU kernel) over a SegmentMask: causal or bidirectional + segment ids.

The kernel takes one example, [N, L, H], with q not scaled; the batch is a vmap. Under a mesh
(jax.set_mesh, as the trainer and aot.py trace) a Pallas call cannot be partitioned by the
compiler, so the kernel runs inside a shard_map: rows split over the mesh axes of the `batch`
logical rule, heads over those of `heads` when they divide (model/layers.py's logical names).
Off TPU only `interpret=True` runs (the tests: the HLO interpreter on CPU).

Segment 0 (padding) is only another segment to the kernel: padding queries attend to padding
keys, real ones never do. attention.attend overwrites padding rows with the dense path's value.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec

BLOCKS = (512, 256, 128)  # the largest that divides L (key blocks are whole 128-lane tiles)


def _kernel(heads: int, length: int, causal: bool, interpret: bool):
    bs = next((b for b in BLOCKS if length % b == 0), None)
    if bs is None:
        raise ValueError(f"splash attention: L={length} is not a multiple of 128")
    one = sm.CausalMask((length, length)) if causal else sm.FullMask((length, length))
    blocks = sk.BlockSizes(
        block_q=bs,
        block_kv=bs,
        block_kv_compute=bs,
        block_q_dkv=bs,
        block_kv_dkv=bs,
        block_kv_dkv_compute=bs,
        block_q_dq=bs,
        block_kv_dq=bs,
    )
    return sk.make_splash_mha(
        sm.MultiHeadMask([one] * heads),
        block_sizes=blocks,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def splash_attention(q, k, v, segment_ids, causal: bool, *, interpret: bool = False):
    """q, k, v [B, L, N, H], segment_ids int32[B, L] -> [B, L, N, H] (q's dtype)."""
    H = q.shape[-1]
    q = (q * (1.0 / math.sqrt(H))).astype(k.dtype)  # the kernel does not scale
    to_heads = lambda x: jnp.einsum("BLNH->BNLH", x)

    def local(q, k, v, seg):
        kernel = _kernel(q.shape[1], q.shape[2], causal, interpret)
        one = lambda q, k, v, s: kernel(q, k, v, segment_ids=sk.SegmentIds(q=s, kv=s))
        return jax.vmap(one)(q, k, v, seg)

    args = (to_heads(q), to_heads(k), to_heads(v), segment_ids)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out = local(*args)
    else:
        batch, heads = nn.logical_to_mesh_axes(("batch", "heads"))
        tensor = heads if isinstance(heads, tuple) else (heads,) if heads else ()
        if q.shape[2] % math.prod(mesh.shape[a] for a in tensor):
            heads = None
        spec = PartitionSpec(batch, heads, None, None)
        out = jax.shard_map(
            local,
            in_specs=(spec, spec, spec, PartitionSpec(batch, None)),
            out_specs=spec,
            check_vma=False,
        )(*args)
    return jnp.einsum("BNLH->BLNH", out)
