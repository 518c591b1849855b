"""Issue 12 §1: the AOT estimate of configs/metalm_lm.py on a TPU topology under one lever at a
time. Each variant is one `python -m metalm_jax.aot` run (a subprocess: each compile holds ~10 GB
of host memory) with `--config.` overrides on the committed config; the decoder is unrolled in
every variant (a scanned loop body is counted once by the compiler's cost model, so a scanned
program gives no step-time estimate). Rows go to a JSON-lines file and a Markdown table.

    python benchmarks/aot_sweep.py --out runs/aot_sweep            # all variants, serially
    python benchmarks/aot_sweep.py --only accum1,accum1_minimal   # some of them

A full-size v5p-128 compile takes ~10 minutes and ~11 GB of host memory on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

UNROLLED = ["--config.model.decoder.scan=False"]
# Each variant sets every lever it is about, so that it compiles the same program whatever the
# committed config is now (the config took the accum1_minimal row's values after this sweep).
FULL = "--config.model.decoder.remat=full"
MINIMAL = "--config.model.decoder.remat=minimal"
VARIANTS = {  # name -> (what changed, overrides)
    "before": (
        "the config before the sweep: 8 x 128-row microbatches, remat full, attention auto",
        ["--config.train.grad_accum_steps=8", FULL],
    ),
    "before_dense": (
        "the same with dense attention (the 26.7% row's program)",
        ["--config.train.grad_accum_steps=8", FULL, "--config.model.attention=dense"],
    ),
    "accum4": ("4 microbatches of 256 rows", ["--config.train.grad_accum_steps=4", FULL]),
    "accum1": ("1 microbatch of 1024 rows", ["--config.train.grad_accum_steps=1", FULL]),
    "accum1_minimal": (
        "1 microbatch, decoder remat minimal (matmuls without batch dims saved): committed",
        ["--config.train.grad_accum_steps=1", MINIMAL],
    ),
    "accum2_minimal": (
        "2 microbatches, decoder remat minimal",
        ["--config.train.grad_accum_steps=2", MINIMAL],
    ),
    "minimal_fused": (
        "accum1_minimal + train.fused_xent (no [B, L, V] f32 logits kept; head recomputed)",
        ["--config.train.grad_accum_steps=1", MINIMAL, "--config.train.fused_xent=True"],
    ),
    "mesh_data4": (
        "accum1_minimal on a data 4 x fsdp 16 mesh (weights gathered over 16 chips, not 64)",
        ["--config.train.grad_accum_steps=1", MINIMAL, "--config.mesh.shape=(4,-1,1)"],
    ),
    "mesh_tensor4": (
        "accum1_minimal on an fsdp 16 x tensor 4 mesh (heads and d_ff split 4 ways)",
        ["--config.train.grad_accum_steps=1", MINIMAL, "--config.mesh.shape=(1,-1,4)"],
    ),
    "accum1_dense": (
        "1 microbatch, dense attention (no splash)",
        ["--config.train.grad_accum_steps=1", FULL, "--config.model.attention=dense"],
    ),
}


def run(name: str, overrides: list[str], args) -> dict:
    out = os.path.join(args.out, f"{name}.json")
    cmd = [sys.executable, "-m", "metalm_jax.aot", f"--config={args.config}",
           f"--topology={args.topology}", f"--json={out}", *UNROLLED, *overrides]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_ACCELERATOR_TYPE="v5p-8",
               TPU_WORKER_HOSTNAMES="localhost")  # fmt: skip
    print("$ " + " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    with open(os.path.join(args.out, f"{name}.log"), "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc or not os.path.exists(out):
        tail = open(os.path.join(args.out, f"{name}.log")).read().splitlines()[-3:]
        return {"name": name, "error": f"exit {rc}: " + " | ".join(tail)[-400:], "wall": wall}
    with open(out) as f:
        r = json.load(f)
    r.update(name=name, wall=wall)
    return r


def row(r: dict, what: str) -> str:
    if "error" in r:
        return f"| {r['name']} | {what} | failed: {r['error']} |||||"
    gib = lambda b: f"{b / 2**30:.1f}"
    mfu = r.get("estimated_mfu")
    return (
        f"| {r['name']} | {what} | {gib(r['peak_bytes'])} | "
        f"{r['compiler_flops_per_device'] * r['grad_accum_steps'] * r['chips']:.2e} | "
        f"{r['estimated_step_seconds'] or float('nan'):.2f} | "
        + (f"**{100 * mfu:.1f}%**" if mfu else "n/a")
        + f" | {r['wall'] / 60:.0f} min |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/metalm_lm.py")
    ap.add_argument("--topology", default="v5p-128")
    ap.add_argument("--out", default="runs/aot_sweep")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        sys.exit(f"--only: unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    header = (
        "| variant | what changed | peak GiB/chip | compiler FLOPs/step | est. step s "
        "| est. MFU | compile |\n|---|---|---|---|---|---|---|"
    )
    lines = []
    for n in names:
        what, overrides = VARIANTS[n]
        r = run(n, overrides, args)
        with open(os.path.join(args.out, "rows.jsonl"), "a") as f:
            f.write(json.dumps(r, default=str) + "\n")
        lines.append(row(r, what))
        print(header + "\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
