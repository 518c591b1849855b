"""Why DeepNorm starts slowly at the tiny size: a controlled study (issue 14, item 12).

    python benchmarks/deepnorm_study.py --out runs/deepnorm            # ~10 runs, ~4 min each
    python benchmarks/deepnorm_study.py --out runs/deepnorm --only dn,dn_noscale

Every run is `python -m metalm_jax.train --config configs/tiny.py` as a decoder-only LM
(text_encoder.enabled=False: the study is about the decoder's normalization, and spans would only
add noise) for `--steps` optimizer steps at the tiny config's learning rate, held-out loss every
`--eval_every` steps. Each variant changes one thing against `dn` (DeepNorm as configs/metalm_lm.py
builds it: alpha = (2N)^1/4 residual, beta = (8N)^-1/4 on value/out/FFN weights, Adam eps 1e-6,
token embeddings times sqrt(d_model)). A run whose metrics reach the last step is skipped, so the
study resumes. Writes <out>/deepnorm.md: held-out loss per variant at each eval step, with the
command of every run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DN = ["--config.model.decoder.norm=deepnorm"]
PRE = ["--config.model.decoder.norm=pre"]
DEPTH = "--config.model.decoder.num_layers="
VARIANTS = {  # name -> (overrides, what it tests)
    "pre": (PRE, "pre-LN (the tiny config's choice)"),
    "post": (["--config.model.decoder.norm=post"], "plain post-LN (alpha = beta = 1)"),
    "dn": (DN, "DeepNorm as the paper config builds it"),
    "dn_eps8": (DN + ["--config.optim.eps=1e-8"], "Adam eps 1e-8 instead of 1e-6"),
    "dn_gain": (
        DN + [f"--config.model.decoder.qkv_gain={1 / math.sqrt(2)}"],
        "Xavier gain 1/sqrt 2 on q/k/v (TorchScale)",
    ),
    "dn_warm100": (DN + ["--config.optim.warmup_steps=100"], "warm-up 100 steps instead of 30"),
    "dn_noscale": (
        DN + ["--config.model.decoder.embed_scale=False"],
        "token embeddings not scaled by sqrt(d_model) (TorchScale's default)",
    ),
    "dn_alpha": (
        DN + ["--config.model.decoder.deepnorm_beta=1.0"],
        "DeepNorm's residual weight alpha only (beta = 1: plain init)",
    ),
    "dn_beta": (
        DN + ["--config.model.decoder.deepnorm_alpha=1.0"],
        "DeepNorm's init scale beta only (alpha = 1)",
    ),
    "dn_learned": (
        DN + ["--config.model.decoder.positions=learned"],
        "learned positions instead of sinusoidal (no constant component)",
    ),
    "dn_8": (DN + [DEPTH + "8"], "depth 8"),
    "pre_8": (PRE + [DEPTH + "8"], "pre-LN, depth 8"),
    "dn_12": (DN + [DEPTH + "12"], "depth 12"),
    "pre_12": (PRE + [DEPTH + "12"], "pre-LN, depth 12"),
}  # fmt: skip


def evals(workdir: str) -> dict[int, float]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "eval/loss" in rec:
                out[rec["step"]] = rec["eval/loss"]
    return out


def command(name: str, out: str, args) -> list[str]:
    cmd = [
        "-m", "metalm_jax.train", "--config=configs/tiny.py",
        f"--workdir={os.path.join(out, name)}",
        "--config.model.text_encoder.enabled=False",
        f"--config.train.steps={args.steps}", f"--config.train.eval_every={args.eval_every}",
        f"--config.train.checkpoint_every={args.steps}", "--config.train.sample_tokens=0",
        "--config.train.log_every=25", f"--config.seed={args.seed}",
    ]  # fmt: skip
    tok = os.path.join(out, "pre", "tokenizer.model")
    if name != "pre":  # every run reads the tokenizer the first one trained
        cmd.append(f"--config.data.tokenizer_path={tok}")
    return cmd + VARIANTS[name][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/deepnorm")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval_every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = p.parse_args()
    out = os.path.abspath(args.out)
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    if "pre" not in names and not os.path.exists(os.path.join(out, "pre", "tokenizer.model")):
        names.insert(0, "pre")  # trains the shared tokenizer
    for name in names:
        workdir = os.path.join(out, name)
        if args.steps in evals(workdir):
            print(f"== {name}: done", flush=True)
            continue
        cmd = command(name, out, args)
        print(f"== {name}: python {' '.join(cmd)}", flush=True)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "study.log"), "w") as log:
            rc = subprocess.call(
                [sys.executable, *cmd], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        if rc:
            sys.exit(f"{name} failed (rc {rc}): see {workdir}/study.log")
        print(f"   held-out loss {evals(workdir)}", flush=True)
    report(out, args)


def report(out: str, args) -> None:
    steps = list(range(args.eval_every, args.steps + 1, args.eval_every))
    lines = [
        f"Held-out loss of the tiny decoder-only LM (seed {args.seed}) at each step:",
        "",
        "| variant | what changes | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for name, (_, what) in VARIANTS.items():
        got = evals(os.path.join(out, name))
        if got:
            cells = [f"{got[s]:.2f}" if s in got else "" for s in steps]
            lines.append(f"| {name} | {what} | " + " | ".join(cells) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"    python {' '.join(command(n, out, args))}" for n in VARIANTS]
    with open(os.path.join(out, "deepnorm.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[: 4 + len(VARIANTS)]))


if __name__ == "__main__":
    main()
