"""Digests of a train state's arrays, for verifying checkpoints (training/checkpoint.py).

Per array, two sums of its bits read as unsigned 32-bit words (16- and 8-bit types widened),
modulo 2**32: the plain sum and the sum weighted by odd position factors. Any change of a
single word changes both (an odd factor is invertible modulo 2**32); moved or swapped blocks
change the weighted one. Not cryptographic: it catches flipped bytes, truncated or zeroed
chunks and mixed-up arrays, not a forger. Computed in one jitted pass on device, sharded as the
state is, so the host receives two numbers per array.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _words(x) -> jax.Array:
    """uint32[n]: the bits of x (any dtype) as 32-bit words, narrower types widened."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    w = jax.lax.bitcast_convert_type(x, bits)  # an 8-byte type gains a trailing axis of 2
    return w.astype(jnp.uint32).reshape(-1)


def _sums(x) -> jax.Array:
    w = _words(x)
    odd = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * odd, dtype=jnp.uint32)])


@jax.jit
def _all_sums(tree):
    return jax.tree.map(_sums, tree)


def digests(tree, prefix: str = "") -> dict:
    """{"arrays": {path: [sum, weighted sum]}} for every array leaf of `tree` (JSON-able);
    `prefix` goes before each path (a subtree's paths as they are in the whole state's)."""
    sums = jax.device_get(_all_sums(tree))
    flat = jax.tree_util.tree_flatten_with_path(sums)[0]
    return {"arrays": {prefix + jax.tree_util.keystr(p): [int(s[0]), int(s[1])] for p, s in flat}}


def compare(saved: dict, now: dict) -> str:
    """'' when `now` matches `saved` (both from digests()), else a short reason naming arrays."""
    a, b = saved.get("arrays", {}), now["arrays"]
    if set(a) != set(b):
        return f"digest lists {len(a)} arrays, the state has {len(b)}"
    bad = [k for k in b if list(a[k]) != b[k]]
    if not bad:
        return ""
    more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
    return f"digest mismatch in {len(bad)} array(s): {', '.join(bad[:2])}{more}"


def compare_part(saved: dict, now: dict) -> str:
    """compare() for part of a state (e.g. its parameters alone): each array of `now` against
    the entry of `saved` under the same path; '' when all match."""
    a = saved.get("arrays", {})
    missing = [k for k in now["arrays"] if k not in a]
    if missing:
        return f"digest has no entry for {len(missing)} restored array(s): {', '.join(missing[:2])}"
    return compare({"arrays": {k: a[k] for k in now["arrays"]}}, now)
