"""The input pipeline alone against the train step's consumption (issue 12 §4), per host.

    JAX_PLATFORMS=cpu python benchmarks/pipeline_speed.py              # all four configs
    JAX_PLATFORMS=cpu python benchmarks/pipeline_speed.py --configs tiny metalm_lm --seconds 10
    JAX_PLATFORMS=cpu python benchmarks/pipeline_speed.py --step-seconds 2.64   # another LM step

For each config the pipeline is built as the trainer builds it (metalm_jax/loop.py): the run's
tokenizer (pipeline.build_tokenizer, cached in --workdir/<config>), model/build.derive for the
row format, and pipeline.train_iterator with the host's batch (global batch / processes) and its
shard (process 0 of the config's hosts). Batches are then pulled for `--warmup` seconds and for
`--seconds` more, timed: rows/s, decoder tokens/s (rows x seq_len, padding included, as the step
consumes them), and with images encoder tokens/s (text-encoder grid positions) and images/s
(image slots actually holding an image). The first-batch latency is the time from building the
iterator to the first batch (the tokenizer is built before, as in training). The process's CPU
time over the timed window (all its threads) gives the cores it got and rows per CPU-second, the
figure that depends least on what else shares the machine. With --one-shard the host reads the
whole corpus (shard 0 of 1) instead of its 1/hosts.

Consumption:
  tiny, tiny_vl    the real train step on this machine (training/trainer.py on the config's mesh,
                   the pipeline's own batches, pulled beforehand): median of --steps steps
                   after two warm-up steps (--no-steps: skip; no headroom printed);
  metalm_lm        (global batch / hosts) / --step-seconds: v5p-128 = 64 chips = 16 hosts,
                   --step-seconds default 0.94 s (metalm_jax.aot's estimate for the committed
                   config on v5p-128, RESULTS.md "Pod efficiency");
  metalm_vl        the same with --vl-step-seconds (default 0.042 s: the config's 3.29e14
                   model FLOPs per step at the LM's 26.7% estimated MFU on 64 v5p chips,
                   459 TFLOP/s each; an assumption, not an AOT figure).

Headroom = pipeline rows/s / consumed rows/s (target >= 10).

Overrides (printed): the paper configs' vocabularies (64,000 / 50,257) cannot be trained as
SentencePiece on the bundled KJV (+ emoji captions), which allows at most ~10,900 pieces, so
data.vocab_size is set to 8,192 there; encoding speed hardly depends on the vocabulary size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "..", "configs")

# name -> (config file, hosts of the pod it targets, overrides, which step time to use)
SETUPS = {
    "tiny": ("tiny.py", 1, {}, "measured"),
    "tiny_vl": ("tiny_vl.py", 1, {}, "measured"),
    "metalm_lm": ("metalm_lm.py", 16, {"data.vocab_size": 8192}, "step_seconds"),
    "metalm_vl": ("metalm_vl.py", 16, {"data.vocab_size": 8192}, "vl_step_seconds"),
}


def load(name: str):
    from metalm_jax.config import load_config_file

    file, hosts, overrides, consumer = SETUPS[name]
    cfg = load_config_file(os.path.normpath(os.path.join(CONFIGS, file)))
    for key, value in overrides.items():
        section, field = key.split(".")
        cfg[section][field] = value
    return cfg, hosts, overrides, consumer


def measure_pipeline(
    cfg, hosts: int, workdir: str, warmup: float, seconds: float, one_shard: bool = False
) -> dict:
    from metalm_jax.data.feed import pipeline
    from metalm_jax.model.build import derive

    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    tok = pipeline.build_tokenizer(cfg, workdir)
    t_tok = time.perf_counter() - t0
    batch = cfg.train.batch_size // hosts
    derived = derive(cfg, tok)
    t0 = time.perf_counter()
    shard = (0, 1) if one_shard else (0, hosts)
    it = pipeline.train_iterator(cfg, tok, batch, derived.rows, shard)
    first = next(it)
    latency = time.perf_counter() - t0
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        next(it)
    n, enc, images = 0, 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        b = next(it)
        n += 1
        if "enc_tokens" in b:
            enc += int(b["enc_tokens"].size)
        if "image_valid" in b:
            images += int(np.sum(b["image_valid"]))
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    cpu = time.process_time() - c0  # all threads of this process
    rows = n * batch
    return {
        "tokenizer_s": t_tok,
        "batch": batch,
        "latency_s": latency,
        "batches": n,
        "seconds": dt,
        "rows_s": rows / dt,
        "cpu_share": cpu / dt,  # cores' worth of CPU the pipeline got (the machine is shared)
        "rows_cpu_s": rows / cpu,
        "tokens_s": rows * cfg.data.seq_len / dt,
        "enc_tokens_s": enc / dt,
        "images_s": images / dt,
        "first": first,
        "iterator": it,
        "tok": tok,
        "derived": derived,
    }


def measure_step(cfg, derived, it, steps: int) -> float:
    """Median seconds of the real train step on this machine, on the pipeline's batches."""
    import jax

    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer

    batches = [next(it) for _ in range(steps + 2)]  # pulled first: the step is timed alone
    trainer = build_trainer(cfg, make_mesh(cfg.mesh.shape), derived)
    times = []
    with jax.set_mesh(trainer.mesh):
        state = trainer.init(jax.random.key(cfg.seed))
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            state, m = trainer.step(state, trainer.global_batch(b))
            jax.block_until_ready(m["loss_sum"])
            if i >= 2:  # two warm-up steps (compile)
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--seconds", type=float, default=20.0, help="timed pulling per config")
    ap.add_argument("--warmup", type=float, default=5.0, help="untimed pulling first")
    ap.add_argument("--step-seconds", type=float, default=0.94, help="metalm_lm step on v5p-128")
    ap.add_argument("--vl-step-seconds", type=float, default=0.042, help="metalm_vl step")
    ap.add_argument("--steps", type=int, default=5, help="timed train steps (tiny configs)")
    ap.add_argument("--no-steps", dest="time_steps", action="store_false")
    ap.add_argument("--workdir", default="/tmp/pipeline_speed", help="tokenizer cache")
    ap.add_argument(
        "--one-shard",
        action="store_true",
        help="read the whole corpus on this host (the host's batch unchanged): a real corpus's "
        "shard is large, the bundled KJV's 1/16 is 72 chapters, ~31 rows of 2048 per epoch",
    )
    args = ap.parse_args()

    table = []
    for name in args.configs:
        cfg, hosts, overrides, consumer = load(name)
        note = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
        shard = "the whole corpus" if args.one_shard else f"shard 0 of {hosts}"
        print(f"== {name}: {hosts} host(s), {shard}, overrides: {note}", flush=True)
        r = measure_pipeline(
            cfg, hosts, os.path.join(args.workdir, name), args.warmup, args.seconds, args.one_shard
        )
        print(
            f"   tokenizer {r['tokenizer_s']:.1f}s; batch {r['batch']} x {cfg.data.seq_len}; "
            f"first batch {r['latency_s']:.2f}s; {r['batches']} batches in {r['seconds']:.1f}s: "
            f"{r['rows_s']:,.1f} rows/s, {r['tokens_s']:,.0f} tokens/s, "
            f"{r['enc_tokens_s']:,.0f} encoder tokens/s, {r['images_s']:,.1f} images/s; "
            f"CPU {r['cpu_share']:.2f} cores: {r['rows_cpu_s']:,.1f} rows per CPU-second",
            flush=True,
        )
        need, how = None, ""
        if consumer == "measured":
            if args.time_steps:
                step = measure_step(cfg, r["derived"], r["iterator"], args.steps)
                need, how = r["batch"] / step, f"measured step {step * 1e3:.0f} ms here"
        else:
            step = getattr(args, consumer)
            need = r["batch"] / step
            how = f"{cfg.train.batch_size} / {hosts} hosts / {step} s (assumed step)"
        if need is not None:
            print(
                f"   step consumes {need:,.1f} rows/s ({how}): headroom {r['rows_s'] / need:.1f}x"
            )
        table.append((name, need, r, how))
    print("\n| config | per-host batch | rows needed/s | pipeline rows/s | tokens/s | "
          "enc tokens/s | images/s | first batch | CPU cores used | rows/CPU-s | headroom | "
          "consumption |")  # fmt: skip
    print("|" + "---|" * 12)
    for name, need, r, how in table:
        head = f"{r['rows_s'] / need:.1f}x" if need else "-"
        need_s = f"{need:,.1f}" if need else "-"
        print(
            f"| {name} | {r['batch']} | {need_s} | {r['rows_s']:,.1f} | {r['tokens_s']:,.0f} | "
            f"{r['enc_tokens_s']:,.0f} | {r['images_s']:,.1f} | {r['latency_s']:.2f} s | "
            f"{r['cpu_share']:.2f} | {r['rows_cpu_s']:,.1f} | {head} | {how or '-'} |"
        )


if __name__ == "__main__":
    main()
