"""Attention backends and the choice between them (`model.attention`).

    dense      the reference: [B, N, L, S] float32 logits over a boolean mask (masks.py), O(L^2)
               memory; the only path for KV-cache decoding
    blockwise  pure JAX, flash-style online softmax over key blocks, skipping fully masked
               blocks (model/blockwise.py); O(L * block) memory; any platform, relative bias too
    splash     the Pallas TPU kernel over segment ids + causal flag (model/splash.py)
    cudnn      cuDNN flash attention via jax.nn.dot_product_attention(implementation="cudnn"):
               causal or bidirectional + right padding (sequence lengths), one segment per row
    auto       splash on TPU, cudnn on GPU where the mask allows, else the fallback

A backend that cannot express a stack's attention falls back: blockwise from
`BLOCKWISE_MIN_LEN` positions on, dense below (an explicit `splash`/`cudnn` request too).
What was chosen, and why, is logged once per stack and choice (`choose` is pure and tested).
Every fast backend sees a masks.SegmentMask; rows of segment 0 (padding, fully masked) get the
dense path's value, the mean of v, so all backends agree on every row.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from absl import logging

from metalm_jax.model.blockwise import blockwise_attention
from metalm_jax.model.masks import MASK_VALUE, SegmentMask

BACKENDS = ("dense", "blockwise", "splash", "cudnn", "auto")
BLOCKWISE_MIN_LEN = 1024  # fallback: below this the [L, L] logits are small and dense is faster
BLOCK = 512  # blockwise key/query block (benchmarks/attention_memory.py)


@dataclasses.dataclass(frozen=True)
class Choice:
    backend: str  # dense | blockwise | splash | cudnn
    reason: str


def choose(
    requested: str,
    platform: str,
    *,
    length: int,
    causal: bool,
    packed: bool,
    has_bias: bool,
    head_dim: int,
    dtype,
) -> Choice:
    """The backend for one stack's full-sequence attention.

    requested: model.attention; platform: cpu | gpu | tpu (the mesh's devices); length: L;
    packed: masks.SegmentMask.packed; has_bias: a relative position bias is added."""
    if requested not in BACKENDS:
        raise ValueError(f"model.attention={requested!r}: use one of {' | '.join(BACKENDS)}")
    if requested in ("dense", "blockwise"):
        return Choice(requested, "model.attention")
    kind = "causal" if causal else "bidirectional"
    if requested == "splash" or (requested == "auto" and platform == "tpu"):
        why = _splash_blocker(platform, length, has_bias)
        if why is None:
            mode = " (interpret mode)" if platform != "tpu" else ""
            return Choice("splash", f"{kind} + segment ids on {platform}{mode}")
        return _fallback(length, f"splash cannot serve this stack: {why}")
    if requested == "cudnn" or (requested == "auto" and platform == "gpu"):
        why = _cudnn_blocker(platform, packed, has_bias, head_dim, dtype)
        if why is None:
            return Choice("cudnn", f"{kind} + padding (sequence lengths) on gpu")
        return _fallback(length, f"cudnn cannot serve this stack: {why}")
    return _fallback(length, f"no fused kernel on {platform}")


def _splash_blocker(platform: str, length: int, has_bias: bool) -> str | None:
    if platform not in ("tpu", "cpu"):  # CPU: the interpreter (tests)
        return f"a TPU kernel, not for {platform}"
    if has_bias:
        return "the kernel takes no additive bias (relative positions)"
    if length % 128:  # the kernel's key blocks are whole 128-lane tiles, interpreted or not
        return f"L={length} is not a multiple of 128"
    return None


def _cudnn_blocker(platform, packed, has_bias, head_dim, dtype) -> str | None:
    if platform != "gpu":
        return f"a GPU kernel, not for {platform}"
    if packed:
        return "rows pack several segments; cuDNN's masks are causal + padding only"
    if has_bias:
        return "relative position bias"
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN flash attention needs bfloat16/float16, compute dtype is {jnp.dtype(dtype)}"
    if head_dim > 128 or head_dim % 8:
        return f"head dim {head_dim} (cuDNN: a multiple of 8, at most 128)"
    return None


def _fallback(length: int, why: str) -> Choice:
    if length >= BLOCKWISE_MIN_LEN:
        return Choice("blockwise", f"{why}; L={length} >= {BLOCKWISE_MIN_LEN}: O(L*block) memory")
    return Choice("dense", f"{why}; L={length} < {BLOCKWISE_MIN_LEN}: dense is fastest")


def platform() -> str:
    """cpu | gpu | tpu of the mesh being traced for (an AOT compile targets its topology's
    devices from a CPU host), else of the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    name = jax.default_backend() if mesh.empty else mesh.abstract_device.platform
    return "gpu" if name in ("cuda", "rocm") else name


_logged: set = set()


def resolve(requested: str, where: str, mask: SegmentMask, has_bias: bool, cfg) -> str:
    """choose() for the stack at `where` (a module path) tracing now; logs the choice once."""
    p = platform()
    choice = choose(
        requested,
        p,
        length=mask.segment_ids.shape[1],
        causal=mask.causal,
        packed=mask.packed,
        has_bias=has_bias,
        head_dim=cfg.head_dim,
        dtype=cfg.compute_dtype,
    )
    line = f"attention {where}: {choice.backend} ({choice.reason})"
    if line not in _logged:
        _logged.add(line)
        logging.info(line)
    return choice.backend


def dense_attention(q, k, v, mask, bias=None):
    """q [B, L, N, H], k, v [B, S, N, H], mask bool[B, 1|N, L, S], bias float32[B, N, L, S] or
    None -> [B, L, N, H]: float32 logits and softmax, masked logits at MASK_VALUE."""
    logits = jnp.einsum("BLNH,BSNH->BNLS", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("BNLS,BSNH->BLNH", probs.astype(v.dtype), v)


def cudnn_attention(q, k, v, mask: SegmentMask, *, implementation: str = "cudnn"):
    """q, k, v [B, L, N, H] (BTNH, jax.nn.dot_product_attention's layout) over a mask that is
    causal or not + right padding (mask.packed False): the padding as sequence lengths.
    `implementation="xla"` runs the same call on CPU (tests)."""
    lengths = mask.lengths()
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        is_causal=mask.causal,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )


def attend(backend: str, q, k, v, mask: SegmentMask, bias=None):
    """Self-attention [B, L, N, H] by a fast backend over a SegmentMask; padding rows (segment
    0) get the dense path's value (uniform over every key: the mean of v)."""
    if backend == "blockwise":
        out = blockwise_attention(q, k, v, mask.segment_ids, mask.causal, bias, block=BLOCK)
    elif backend == "splash":
        from metalm_jax.model.splash import splash_attention  # Pallas loads only when used

        interpret = platform() != "tpu"
        out = splash_attention(q, k, v, mask.segment_ids, mask.causal, interpret=interpret)
    elif backend == "cudnn":
        out = cudnn_attention(q, k, v, mask)
    else:
        raise ValueError(f"attend: unknown backend {backend!r}")
    pad = (mask.segment_ids == 0)[:, :, None, None]
    mean_v = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(out.dtype)
    return jnp.where(pad, mean_v, out.astype(v.dtype))
