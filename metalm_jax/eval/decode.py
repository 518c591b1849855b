"""Generation with a KV cache: prefill a mixed prompt (text tokens and encoder slots), then extend
token by token inside one jitted `lax.while_loop`. Greedy, temperature, top-k, top-p and beam
search (length penalty), stop tokens, batched prompts of different lengths.

Prompts are left-padded into one [B, P] grid (padding has segment 0 and is never attended), so
every row appends at the same cache index; positions count from each row's own start. The
samplers take logits only, so they are tested with fake models; `generate` takes any model with
MetaLM's `__call__(batch, decode=..., encode=...)`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS
from metalm_jax.types import IMAGE_FIELDS, Batch

NEG = -1e9


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    beam: int = 1  # > 1: beam search (temperature / top-k / top-p ignored)
    length_penalty: float = 0.6  # beam score / ((5 + length) / 6) ** alpha (GNMT)


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
    """float32[B, V] with everything outside the top-k / nucleus set to NEG."""
    logits = logits.astype(jnp.float32)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, NEG, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
        keep_sorted = before < top_p  # always keeps the most likely token
        keep = (
            jnp.zeros_like(keep_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(keep_sorted)
        )
        logits = jnp.where(keep, logits, NEG)
    return logits


def sample(logits, key, cfg: SamplingConfig):
    """int32[B] next tokens from float32[B, V] logits."""
    if cfg.temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def left_pad_prompts(
    prompts: list[list[int]], slot_rows=None, pad_id: int = SENTENCEPIECE_IDS.pad
) -> dict:
    """Token lists (each starting with <s>) -> left-padded decoder grid fields [B, P]; the
    padding (segment 0, never attended) holds `pad_id`, the tokenizer's <pad>.

    `slot_rows`, if given, holds per prompt a list of slot indices (-1 for text) aligned with its
    tokens, so prompts can carry encoder slots.
    """
    P = max(len(p) for p in prompts)
    B = len(prompts)
    tokens = np.full((B, P), pad_id, np.int32)
    slots = np.full((B, P), -1, np.int32)
    seg = np.zeros((B, P), np.int32)
    pos = np.zeros((B, P), np.int32)
    for b, p in enumerate(prompts):
        n = len(p)
        tokens[b, P - n :] = p
        seg[b, P - n :] = 1
        pos[b, P - n :] = np.arange(n)
        if slot_rows is not None:
            slots[b, P - n :] = slot_rows[b]
    return {"tokens": tokens, "slot_index": slots, "segment_ids": seg, "positions": pos}


def _step_batch(template: Batch, tokens, positions):
    """A [B, 1] decoder step (no slots, encoders skipped)."""
    B = tokens.shape[0]
    ones = jnp.ones((B, 1), jnp.int32)
    return template.replace(
        tokens=tokens[:, None],
        slot_index=-ones,
        targets=ones * 0,
        loss_weights=jnp.zeros((B, 1), jnp.float32),
        segment_ids=ones,
        positions=positions[:, None],
    )


def init_cache(model, prompt: Batch, max_len: int):
    """Zero KV cache shaped for rows of `max_len` (shapes via eval_shape: no parameters built)."""
    B = prompt.tokens.shape[0]
    full = prompt.replace(
        **{
            k: jnp.zeros((B, max_len), getattr(prompt, k).dtype)
            for k in ("tokens", "slot_index", "targets", "loss_weights", "segment_ids", "positions")
        }
    )
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), full, decode=True)["cache"])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _apply(model, params, cache, batch, encode):
    (logits, _), mut = model.apply(
        {"params": params, "cache": cache}, batch, decode=True, encode=encode, mutable=["cache"]
    )
    return logits, mut["cache"]


@functools.partial(jax.jit, static_argnames=("model", "max_new", "cfg", "stop_ids", "pad_id"))
def generate(
    model,
    params,
    prompt: Batch,
    key,
    *,
    max_new: int,
    cfg: SamplingConfig,
    stop_ids: tuple[int, ...] = (),
    pad_id: int = SENTENCEPIECE_IDS.pad,
):
    """int32[B, max_new] new tokens (`pad_id`, the tokenizer's <pad>, after a stop token) for
    left-padded prompts."""
    if cfg.beam > 1:
        return _beam_search(
            model, params, prompt, max_new=max_new, cfg=cfg, stop_ids=stop_ids, pad_id=pad_id
        )
    B, P = prompt.tokens.shape
    cache = init_cache(model, prompt, P + max_new)
    logits, cache = _apply(model, params, cache, prompt, True)
    logits = logits[:, -1]
    pos = prompt.positions[:, -1] + 1
    stops = jnp.asarray(stop_ids or (-1,), jnp.int32)

    def body(state):
        i, cache, logits, out, done, pos, key = state
        key, sub = jax.random.split(key)
        nxt = sample(logits, sub, cfg)
        nxt = jnp.where(done, pad_id, nxt)
        out = out.at[:, i].set(nxt)
        done = done | jnp.isin(nxt, stops)
        logits, cache = _apply(model, params, cache, _step_batch(prompt, nxt, pos), False)
        return i + 1, cache, logits[:, -1], out, done, pos + 1, key

    def cond(state):
        i, _, _, _, done, _, _ = state
        return (i < max_new) & ~jnp.all(done)

    out = jnp.full((B, max_new), pad_id, jnp.int32)
    state = (0, cache, logits, out, jnp.zeros((B,), bool), pos, key)
    return jax.lax.while_loop(cond, body, state)[3]


def _reorder(cache, idx):
    """Gathers the beam rows `idx` [B*K] of every cache leaf (batch axis by leaf name)."""

    def take(path, x):
        name = path[-1].key
        if name == "index":
            return x
        axis = x.ndim - (2 if name == "valid" else 4)
        return jnp.take(x, idx, axis=axis)

    return jax.tree_util.tree_map_with_path(take, cache)


def _beam_search(
    model, params, prompt: Batch, *, max_new, cfg, stop_ids, pad_id=SENTENCEPIECE_IDS.pad
):
    """Beam search with finished hypotheses kept in the beam (they extend with pad at no cost);
    the best by score / ((5 + length) / 6) ** length_penalty is returned."""
    B, P = prompt.tokens.shape
    K = cfg.beam
    rep = lambda x: jnp.repeat(x, K, axis=0)
    prompt_k = jax.tree.map(rep, prompt)
    cache = init_cache(model, prompt_k, P + max_new)
    logits, cache = _apply(model, params, cache, prompt_k, True)
    logits = logits[:, -1]
    pos = prompt_k.positions[:, -1] + 1
    stops = jnp.asarray(stop_ids or (-1,), jnp.int32)
    V = logits.shape[-1]
    # only beam 0 is live at the start, so the first step does not pick K copies of one token
    scores = jnp.tile(jnp.array([0.0] + [NEG] * (K - 1)), B)

    def body(state):
        i, cache, logits, out, done, lengths, scores, pos = state
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        pad_only = jnp.full((V,), NEG).at[pad_id].set(0.0)
        logp = jnp.where(done[:, None], pad_only[None], logp)
        cand = (scores[:, None] + logp).reshape(B, K * V)
        top, flat = jax.lax.top_k(cand, K)
        beam = flat // V
        tok = (flat % V).astype(jnp.int32)
        src = (jnp.arange(B)[:, None] * K + beam).reshape(-1)
        tok = tok.reshape(-1)
        out = out[src].at[:, i].set(tok)
        was_done = done[src]
        lengths = lengths[src] + (~was_done).astype(jnp.int32)
        done = was_done | jnp.isin(tok, stops)
        cache = _reorder(cache, src)
        logits, cache = _apply(model, params, cache, _step_batch(prompt_k, tok, pos), False)
        return i + 1, cache, logits[:, -1], out, done, lengths, top.reshape(-1), pos + 1

    def cond(state):
        return (state[0] < max_new) & ~jnp.all(state[4])

    out = jnp.full((B * K, max_new), pad_id, jnp.int32)
    zeros = jnp.zeros((B * K,), jnp.int32)
    state = (0, cache, logits, out, jnp.zeros((B * K,), bool), zeros, scores, pos)
    _, _, _, out, _, lengths, scores, _ = jax.lax.while_loop(cond, body, state)
    norm = scores / ((5.0 + lengths) / 6.0) ** cfg.length_penalty
    best = jnp.argmax(norm.reshape(B, K), axis=-1)
    return out.reshape(B, K, max_new)[jnp.arange(B), best]


def left_pad_rows(rows, pad_id: int = SENTENCEPIECE_IDS.pad) -> Batch:
    """Prompt rows of one segment each (data/rows.py) -> a Batch of their used positions,
    left-padded (tokens and targets with `pad_id`, the tokenizer's <pad>) as decode.generate
    needs; encoder and image fields as they are."""
    n = [int((r["segment_ids"] > 0).sum()) for r in rows]
    P = max(n)
    grid = {}
    for key in ("tokens", "slot_index", "segment_ids", "positions", "targets"):
        fill = -1 if key == "slot_index" else pad_id if key in ("tokens", "targets") else 0
        grid[key] = np.full((len(rows), P), fill, np.int32)
        for b, (r, m) in enumerate(zip(rows, n, strict=True)):
            grid[key][b, P - m :] = r[key][:m]
    grid["loss_weights"] = np.zeros((len(rows), P), np.float32)
    for key in ("enc_tokens", "enc_segment_ids", "enc_positions", *IMAGE_FIELDS):
        if key in rows[0]:
            grid[key] = np.stack([r[key] for r in rows])
    return Batch.from_dict(grid)
