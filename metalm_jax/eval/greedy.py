"""Minimal greedy generation without a KV cache: one full forward per new token over a fixed
[1, L] grid, so a single compiled function serves every step. For the end-of-training sample;
KV-cache decoding and beam search belong in eval/decode.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.data.tokenizer import BOS_ID, EOD_ID, EOS_ID, Tokenizer
from metalm_jax.model.build import dummy_batch


def greedy_sample(
    model,
    params,
    tok: Tokenizer,
    prompt: str,
    max_new: int,
    seq_len: int,
    *,
    layout=None,
    image=None,
) -> str:
    """Continues `prompt` greedily for up to `max_new` tokens (stops at </d> or </s> after an
    image). With `image` (float32[H, W, 3], preprocessed) and an ImageLayout, the row starts with
    the image's slots, as an image-text pair does in training: a caption."""
    ids = [BOS_ID]
    template = dummy_batch(1, seq_len, layout.enc_length if layout else 1, layout)
    slots = np.full((1, seq_len), -1, np.int32)
    if image is not None:
        if layout is None:
            raise ValueError("an image needs a model with a vision encoder")
        S = layout.image_slots
        slots[0, 1 : 1 + S] = layout.text_bank + np.arange(S)
        ids += [0] * S
        images = np.zeros_like(template.images)
        images[0, 0] = image
        valid = np.zeros_like(template.image_valid)
        valid[0, 0] = 1
        template = template.replace(images=images, image_valid=valid)
    ids += tok.encode(prompt)
    if len(ids) >= seq_len:
        raise ValueError(f"prompt is {len(ids)} tokens, the model's rows are {seq_len}")
    template = template.replace(slot_index=slots)
    stop = (EOD_ID, EOS_ID) if image is not None else (EOD_ID,)

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
        if t in stop:
            break
    return tok.decode(tokens[0, len(ids) : n])
