"""Train-step time with frozen encoder layers behind a stop_gradient (the trainer's default) vs
without (gradients computed for every parameter, set_to_zero dropping the frozen ones), same
model, same batch, interleaved.

    python benchmarks/frozen_backward.py [--config configs/tiny_minilm.py] [--repeats 5]

Prints the median step time of each (after a warm-up compile) and their ratio, over --repeats
rounds of --steps steps each. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny_minilm.py")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    from metalm_jax import testing
    from metalm_jax.config import load_config_file
    from metalm_jax.data.spans import SpanConfig
    from metalm_jax.parallel import mesh as meshlib
    from metalm_jax.training.step import train_step
    from metalm_jax.training.trainer import build_trainer
    from metalm_jax.types import Batch

    cfg = load_config_file(args.config)
    trainer = build_trainer(cfg, meshlib.make_mesh((1, 1, 1)))
    spans = SpanConfig(cfg.spans.min_len, cfg.spans.max_len, cfg.spans.ratio, cfg.spans.enc_length)
    vocab = min(cfg.data.vocab_size, cfg.model.text_encoder.vocab_size or cfg.data.vocab_size)
    rows = testing.random_batch(cfg.train.batch_size, cfg.data.seq_len, vocab, spans)
    batch = Batch.from_dict(rows)
    plain = jax.jit(
        functools.partial(
            train_step,
            model=trainer.model,
            tx=trainer.tx,
            seed=cfg.seed,
            accum=cfg.train.grad_accum_steps,
        ),
        donate_argnums=0,
    )
    masked = trainer.step
    with jax.set_mesh(trainer.mesh):
        states = {"stop_gradient": trainer.init(jax.random.key(0))}
        states["full backward"] = trainer.init(jax.random.key(0))
        fns = {"stop_gradient": masked, "full backward": plain}
        for name, fn in fns.items():  # compile
            states[name], m = fn(states[name], batch)
            jax.block_until_ready(m)
        times = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    states[name], m = fn(states[name], batch)
                jax.block_until_ready(m)
                times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ts in times.items():
        print(
            f"{name:14s} median {med[name] * 1e3:8.1f} ms/step  runs {[round(t * 1e3) for t in ts]}"
        )
    print(f"speed-up (full / stop_gradient): {med['full backward'] / med['stop_gradient']:.2f}x")


if __name__ == "__main__":
    main()
