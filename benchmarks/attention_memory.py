"""Attention memory and speed on CPU: dense vs blockwise in a decoder forward + backward.

    JAX_PLATFORMS=cpu python benchmarks/attention_memory.py [--lengths 2048 4096 8192]
        [--speed-len 256] [--repeats 5]

A tiny decoder-only MetaLM (2 layers, width 64, 2 heads, vocab 512, batch 1, rows of 4 packed
documents) is compiled for its loss and gradients at each length with model.attention = dense
and blockwise (its default block and a 128 block); the table is the compiler's temporary bytes
(`memory_analysis().temp_size_in_bytes`: activations kept for the backward and scratch; the
parameters are arguments). Nothing runs for the memory table, so long dense rows cost only
compile time. Then the same step at --speed-len runs --repeats times per backend (median of
wall times after a warm-up call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def decoder_step(length: int, backend: str):
    """(jitted loss-and-grad, params, batch) for the tiny decoder at `length`."""
    from metalm_jax import testing
    from metalm_jax.model.build import dummy_batch, model_config
    from metalm_jax.model.metalm import MetaLM

    cfg = testing.micro_config()
    cfg.data.vocab_size = 512
    cfg.data.seq_len = length
    cfg.model.text_encoder.enabled = False
    cfg.model.attention = backend
    d = cfg.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff, d.max_len = 2, 64, 2, 256, length
    model = MetaLM(model_config(cfg))
    rows = testing.random_rows(1, length, cfg.data.vocab_size, docs_per_row=4)
    batch = dummy_batch(1, length, 8)
    batch = batch.replace(**{k: np.stack([r[k] for r in rows]) for k in rows[0]})
    batch = batch.replace(targets=batch.tokens, loss_weights=np.ones((1, length), np.float32))
    params = model.init(jax.random.key(0), batch)["params"]

    def loss(p, b):
        logits, _ = model.apply({"params": p}, b)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), b.targets[..., None], -1)
        return jnp.sum(nll[..., 0] * b.loss_weights)

    return jax.jit(jax.value_and_grad(loss)), params, batch


def temp_bytes(length: int, backend: str) -> int:
    step, params, batch = decoder_step(length, backend)
    return step.lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def step_seconds(length: int, backend: str, repeats: int) -> float:
    step, params, batch = decoder_step(length, backend)
    jax.block_until_ready(step(params, batch))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(step(params, batch))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    from metalm_jax.model import attention

    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--speed-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    default_block = attention.BLOCK
    variants = [("dense", None), ("blockwise", default_block), ("blockwise", 128)]

    def run(fn, *args, block=None):
        if block is not None:
            attention.BLOCK = block
        try:
            return fn(*args)
        finally:
            attention.BLOCK = default_block

    label = lambda b, blk: b if blk is None else f"{b} (block {blk})"
    print("| L | " + " | ".join(f"{label(b, k)} temp MiB" for b, k in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for L in args.lengths:
        mib = [run(temp_bytes, L, b, block=k) / 2**20 for b, k in variants]
        print(f"| {L} | " + " | ".join(f"{m:,.1f}" for m in mib) + " |", flush=True)
    print(f"\nstep (loss + gradients) at L={args.speed_len}, median of {args.repeats}:")
    base = None
    for b, k in variants:
        s = run(step_seconds, args.speed_len, b, args.repeats, block=k)
        base = base or s
        print(f"  {label(b, k)}: {1e3 * s:.2f} ms ({s / base:.2f}x dense)", flush=True)


if __name__ == "__main__":
    main()
