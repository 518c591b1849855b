"""Attention memory and speed on CPU: dense vs blockwise in a decoder forward + backward.

    JAX_PLATFORMS=cpu python benchmarks/attention_memory.py [--lengths 2048 4096 8192]
        [--speed-len 256] [--repeats 5] [--rss]

A tiny decoder-only MetaLM (2 layers, width 64, 2 heads, vocab 512, batch 1, rows of 4 packed
documents) is compiled for its loss and gradients at each length with model.attention = dense
and blockwise (its default block and a 128 block); the table is the compiler's temporary bytes
(`memory_analysis().temp_size_in_bytes`: activations kept for the backward and scratch; the
parameters are arguments). Nothing runs for the memory table, so long dense rows cost only
compile time. Then the same step at --speed-len runs --repeats times per backend (median of
wall times after a warm-up call).

--rss also runs each compiled step once in a fresh process and measures host memory (Linux):
the resident set just before the call, and the peak during it (VmHWM after resetting it through
/proc/self/clear_refs), so the table's "run" column is what executing the step adds on top of
the process with its program compiled and its inputs on the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1])


def run_once_rss(length: int, backend: str) -> dict:
    """In this process: compile the step, then run it once; host memory in MiB around the run."""
    step, params, batch = decoder_step(length, backend)
    params, batch = jax.device_put((params, batch))
    compiled = step.lower(params, batch).compile()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS from here on
        f.write("5")
    jax.block_until_ready(compiled(params, batch))
    peak = _status_kib("VmHWM")
    return {"before_mib": before / 1024, "peak_mib": peak / 1024, "run_mib": (peak - before) / 1024}


def rss_in_subprocess(length: int, backend: str, block: int | None) -> dict:
    cmd = [sys.executable, __file__, "--one", str(length), backend, str(block or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    from metalm_jax.model import attention

    if len(sys.argv) == 5 and sys.argv[1] == "--one":  # a child of --rss
        length, backend, block = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        if block:
            attention.BLOCK = block
        print(json.dumps(run_once_rss(length, backend)))
        return

    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--speed-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5, help="0: no speed run")
    ap.add_argument("--rss", action="store_true", help="also run each step once: host memory")
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
    if args.rss:
        print("\nhost memory of one run, MiB: added by the run (peak during it) [resident before]")
        print("| L | " + " | ".join(label(b, k) for b, k in variants) + " |")
        print("|---|" + "---|" * len(variants))
        for L in args.lengths:
            rs = [rss_in_subprocess(L, b, k) for b, k in variants]
            cells = [
                f"{r['run_mib']:,.0f} ({r['peak_mib']:,.0f}) [{r['before_mib']:,.0f}]" for r in rs
            ]
            print(f"| {L} | " + " | ".join(cells) + " |", flush=True)
    if args.repeats <= 0:  # --repeats 0: memory only
        return
    print(f"\nstep (loss + gradients) at L={args.speed_len}, median of {args.repeats}:")
    base = None
    for b, k in variants:
        s = run(step_seconds, args.speed_len, b, args.repeats, block=k)
        base = base or s
        print(f"  {label(b, k)}: {1e3 * s:.2f} ms ({s / base:.2f}x dense)", flush=True)


if __name__ == "__main__":
    main()
