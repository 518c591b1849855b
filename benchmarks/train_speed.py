"""The CPU train step against PyTorch on the same shape (issue 12, §3), in one interleaved run.

    python benchmarks/train_speed.py                      # ours x2, HF GPT-2 eager + compile
    python benchmarks/train_speed.py --no-torch           # ours only
    python benchmarks/train_speed.py --repeats 5 --steps 4

Shape: a GPT-2-like decoder, 6 layers x 512, 8 heads, d_ff 2048, sequence 256, batch 8, vocab
32,000 (pre-LN, learned positions, tied embeddings, AdamW). Runs, each compiled/warmed up first
and then timed in rounds that alternate between them (the machine is shared; compare ratios
within one run):

  ours (i)      the decoder-only LM step (text_encoder.enabled=False)
  ours (i) fused  the same with train.fused_xent=True (no [B, L, V] logits kept)
  ours (ii)     the full MetaLM step: a 2 x 512 text encoder and 25% of the tokens in spans
  torch eager   transformers' GPT2LMHeadModel of the same shape, loss + backward + AdamW
  torch.compile the same under torch.compile (needs the `convert` extra: torch, transformers)

Prints per run the median tokens/s, step time, achieved GFLOP/s (model FLOPs, the 6N + attention
convention of model/build.py) and its share of a matmul peak measured here first (float32
2048^3 jnp.dot), then the ratios the issue asks for: (i) / torch.compile, and (ii)'s step time
over (i)'s scaled by their FLOP ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

LAYERS, WIDTH, HEADS, FF, SEQ, BATCH, VOCAB = 6, 512, 8, 2048, 256, 8, 32000


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured float32 matmul FLOP/s of this machine (median of `reps`)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts)


def our_config(metalm: bool, fused: bool = False):
    from metalm_jax.config import base_config

    c = base_config()
    c.data.vocab_size, c.data.seq_len = VOCAB, SEQ
    d = c.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff, d.max_len = LAYERS, WIDTH, HEADS, FF, SEQ
    d.norm, d.positions, d.embed_scale = "pre", "learned", False  # GPT-2's choices
    e = c.model.text_encoder
    e.enabled = metalm
    e.num_layers, e.d_model, e.num_heads, e.d_ff = 2, WIDTH, HEADS, FF
    c.spans.ratio = 0.25
    c.spans.min_len, c.spans.max_len = 8, 32
    c.spans.enc_length = 96
    c.optim.frozen = []
    c.train.batch_size = BATCH
    c.train.fused_xent = fused
    return c


def our_step(metalm: bool, fused: bool = False):
    """(step(state) -> (state, loss), model FLOPs per step) for our trainer on random rows."""
    from metalm_jax import testing
    from metalm_jax.data.spans import SpanConfig
    from metalm_jax.model.build import step_flops
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer
    from metalm_jax.types import Batch

    cfg = our_config(metalm, fused)
    trainer = build_trainer(cfg, make_mesh((1, 1, 1), jax.devices()[:1]))
    s = cfg.spans
    spans = SpanConfig(s.min_len, s.max_len, s.ratio if metalm else 0.0, s.enc_length)
    batch = Batch.from_dict(testing.random_batch(BATCH, SEQ, VOCAB, spans))
    with jax.set_mesh(trainer.mesh):
        state = trainer.init(jax.random.key(0))

    def step(st):
        with jax.set_mesh(trainer.mesh):
            st, m = trainer.step(st, batch)
        return st, m["loss_sum"]

    return step, state, step_flops(cfg)["total"]


def torch_step(compiled: bool):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    conf = GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
        n_inner=FF, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = GPT2LMHeadModel(conf).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ))

    def fwd_bwd():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    fn = torch.compile(fwd_bwd) if compiled else fwd_bwd

    def step(st):
        return st, fn()

    return step, None


def _sync(x):
    if isinstance(x, jax.Array):
        return x.block_until_ready()
    return float(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--no-torch", dest="torch", action="store_false")
    args = ap.parse_args()

    peak = matmul_peak()
    print(f"matmul peak (float32, 2048^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s", flush=True)
    runs, flops = {}, {}
    ours = (
        ("ours (i) decoder-only", False, False),
        ("ours (i) fused_xent", False, True),
        ("ours (ii) MetaLM", True, False),
    )
    for name, metalm, fused in ours:
        step, state, f = our_step(metalm, fused)
        runs[name], flops[name] = [step, state], f
    dec_flops = flops["ours (i) decoder-only"]
    if args.torch:
        for name, compiled in (("torch eager", False), ("torch.compile", True)):
            step, state = torch_step(compiled)
            runs[name], flops[name] = [step, state], dec_flops
    for name, run in runs.items():  # compile and warm up
        t0 = time.perf_counter()
        for _ in range(2):
            run[1], loss = run[0](run[1])
        _sync(loss)
        print(f"{name}: warm-up {time.perf_counter() - t0:.1f}s", flush=True)
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}  # process CPU seconds (all threads): robust to sharing
    for r in range(args.repeats):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                run[1], loss = run[0](run[1])
            _sync(loss)
            times[name].append((time.perf_counter() - t0) / args.steps)
            cpu[name].append((time.process_time() - c0) / args.steps)
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    med = {n: statistics.median(t) for n, t in times.items()}
    med_cpu = {n: statistics.median(t) for n, t in cpu.items()}
    print(
        f"\n| run | tokens/s | step | GFLOP/s | share of peak | CPU s/step | rounds (s) |"
        f"\n|{'---|' * 7}"
    )
    for n, t in med.items():
        gf = flops[n] / t / 1e9
        rounds = ", ".join(f"{x:.3f}" for x in times[n])
        print(
            f"| {n} | {BATCH * SEQ / t:,.0f} | {t * 1e3:.0f} ms | {gf:.1f} | "
            f"{gf * 1e9 / peak:.0%} | {med_cpu[n]:.2f} | {rounds} |"
        )
    i, ii = med["ours (i) decoder-only"], med["ours (ii) MetaLM"]
    extra = flops["ours (ii) MetaLM"] / dec_flops
    print(
        f"\n(ii) step / (i) step = {ii / i:.2f} for {extra:.2f}x the model FLOPs: "
        f"{ii / i / extra:.2f}x the FLOP-scaled decoder-only step (target <= 1.15)"
    )
    fused = med["ours (i) fused_xent"]
    print(
        f"fused_xent: step {fused / i:.2f}x, CPU time "
        f"{med_cpu['ours (i) fused_xent'] / med_cpu['ours (i) decoder-only']:.2f}x the (i) step's"
    )
    if args.torch:
        for n, t in (("(i)", i), ("(i) fused_xent", fused)):
            print(
                f"{n} tokens/s vs torch eager {med['torch eager'] / t:.2f}x, "
                f"vs torch.compile {med['torch.compile'] / t:.2f}x (target >= 1.1)"
            )


if __name__ == "__main__":
    main()
