"""Generation speed: KV-cache decoding (eval/decode.py, one jitted while_loop) against recomputing
the full prefix for every new token (eval/greedy.py's approach), same model, greedy, batch 1.

    python benchmarks/decode_speed.py [--config configs/tiny.py] [--new 256] [--repeats 3]

Prints tokens/s for both (median of --repeats runs after a warm-up compile) and their ratio.
Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny.py")
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--hf-python",
        default="",
        help="python of a venv with torch+transformers: "
        "also run benchmarks/hf_generate.py on a GPT-2 of the same size",
    )
    args = ap.parse_args()

    from metalm_jax.config import load_config_file
    from metalm_jax.eval import decode
    from metalm_jax.model.build import dummy_batch, model_config
    from metalm_jax.model.metalm import MetaLM

    cfg = load_config_file(args.config)
    model = MetaLM(model_config(cfg))
    P, N = args.prompt, args.new
    L = P + N
    rng = np.random.default_rng(0)
    ids = [[1] + rng.integers(5, cfg.data.vocab_size, P - 1).tolist()]
    prompt = dummy_batch(1, P, 8).replace(**decode.left_pad_prompts(ids))
    params = jax.jit(model.init)(jax.random.key(0), dummy_batch(1, L, 8))["params"]
    sc = decode.SamplingConfig()

    def cached():
        return decode.generate(model, params, prompt, jax.random.key(0), max_new=N, cfg=sc)

    full_template = dummy_batch(1, L, 8)

    @jax.jit
    def next_token(tokens, n):
        seg = (jnp.arange(L) < n).astype(jnp.int32)[None]
        b = full_template.replace(tokens=tokens, segment_ids=seg, positions=jnp.arange(L)[None])
        logits, _ = model.apply({"params": params}, b)
        return jnp.argmax(logits[0, n - 1])

    def recompute():
        tokens = jnp.zeros((1, L), jnp.int32).at[0, :P].set(jnp.asarray(ids[0]))
        for n in range(P, L):
            tokens = tokens.at[0, n].set(next_token(tokens, n))
        return tokens

    results = {}
    for name, fn in (("kv_cache", cached), ("recompute", recompute)):
        jax.block_until_ready(fn())  # compile
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = jax.block_until_ready(fn())
            times.append(time.perf_counter() - t)
        results[name] = N / statistics.median(times)
        print(f"{name:>10}: {results[name]:8.1f} new tokens/s  (median of {args.repeats})")
    del out
    print(
        f"ratio kv_cache / recompute at {N} new tokens: "
        f"{results['kv_cache'] / results['recompute']:.1f}x"
    )
    if args.hf_python:
        import os
        import re
        import subprocess

        d = cfg.model.decoder
        cmd = [
            args.hf_python,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_generate.py"),
            f"--layers={d.num_layers}",
            f"--width={d.d_model}",
            f"--heads={d.num_heads}",
            f"--vocab={cfg.data.vocab_size}",
            f"--prompt={P}",
            f"--new={N}",
            f"--repeats={args.repeats}",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        hf = float(re.search(r"new tokens/s: ([0-9.]+)", out).group(1))
        print(f"{'hf_gpt2':>10}: {hf:8.1f} new tokens/s  (transformers generate, KV cache)")
        print(f"ratio ours (kv_cache) / Hugging Face: {results['kv_cache'] / hf:.2f}x")


if __name__ == "__main__":
    main()
