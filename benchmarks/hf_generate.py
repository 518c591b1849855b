"""Hugging Face transformers GPT-2 `generate` speed on this CPU, for comparison with ours.

Run in its own environment (torch and transformers are not dependencies of metalm_jax):

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch==2.13.0 transformers
    /tmp/hfvenv/bin/python benchmarks/hf_generate.py --layers 4 --width 256 --heads 4 \
        --vocab 4096 --prompt 16 --new 256

Random weights; greedy; KV cache on (`use_cache=True`); prints `new tokens/s: X` (median).
"""

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    for name, default in (
        ("layers", 4),
        ("width", 256),
        ("heads", 4),
        ("vocab", 4096),
        ("prompt", 16),
        ("new", 256),
        ("repeats", 3),
    ):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=a.layers,
        n_embd=a.width,
        n_head=a.heads,
        vocab_size=a.vocab,
        n_positions=a.prompt + a.new,
        n_inner=4 * a.width,
    )
    model = GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(5, a.vocab, (1, a.prompt))
    kw = dict(
        max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, use_cache=True, pad_token_id=0
    )
    with torch.inference_mode():
        model.generate(ids, **kw)  # warm-up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            model.generate(ids, **kw)
            times.append(time.perf_counter() - t)
    print(f"new tokens/s: {a.new / statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
