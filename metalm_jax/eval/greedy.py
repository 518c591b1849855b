"""Minimal greedy generation without a KV cache: one full forward per new token over a fixed
[1, L] grid, so a single compiled function serves every step. For the end-of-training sample;
KV-cache decoding and beam search belong in eval/decode.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.data.tokenizer import BOS_ID, EOD_ID, Tokenizer
from metalm_jax.model.build import dummy_batch


def greedy_sample(model, params, tok: Tokenizer, prompt: str, max_new: int, seq_len: int) -> str:
    """Continues `prompt` greedily for up to `max_new` tokens (stops at </d>)."""
    ids = [BOS_ID] + tok.encode(prompt)
    if len(ids) >= seq_len:
        raise ValueError(f"prompt is {len(ids)} tokens, the model's rows are {seq_len}")
    template = dummy_batch(1, seq_len, 1)

    @jax.jit
    def next_token(params, tokens, n):
        seg = (jnp.arange(seq_len) < n).astype(jnp.int32)[None]
        batch = template.replace(
            tokens=tokens, segment_ids=seg, positions=jnp.arange(seq_len)[None]
        )
        logits, _ = model.apply({"params": params}, batch)
        return jnp.argmax(logits[0, n - 1])

    tokens = np.zeros((1, seq_len), np.int32)
    tokens[0, : len(ids)] = ids
    n = len(ids)
    while n < min(seq_len, len(ids) + max_new):
        t = int(next_token(params, tokens, n))
        tokens[0, n] = t
        n += 1
        if t == EOD_ID:
            break
    return tok.decode(tokens[0, len(ids) : n])
