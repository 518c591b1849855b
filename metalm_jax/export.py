"""Export a trained run's decoder as a Hugging Face GPT-2 directory (config.json +
model.safetensors):

    python -m metalm_jax.export --workdir RUN_DIR --out DIR [--step N]
    (its old name, python -m metalm_jax.convert.gpt2, now says where it went)

Loads the run's parameters (eval/load.py) and writes them with convert/gpt2.export; a decoder a
GPT-2 cannot express (DeepNorm, sinusoidal positions, ...) is an error naming the config keys.
A run with a Hugging Face tokenizer.json (e.g. GPT-2's own) gets it copied beside the weights.
"""

from __future__ import annotations

import os

from metalm_jax import paths


def export_run(workdir: str, out_dir: str, step: int | None = None) -> str:
    """Exports the run in `workdir` (latest checkpoint, or `step`); returns the note."""
    from metalm_jax.convert.gpt2 import export
    from metalm_jax.eval import load

    cfg, tok, _, params = load.load_run(workdir, step)
    note = export(params, cfg, out_dir, tok.ids)
    if tok.kind == "json":
        paths.copy_file(tok.source, os.path.join(out_dir, "tokenizer.json"))
        return f"{note}\ntokenizer: the run's {tok.source}, copied as tokenizer.json"
    return (
        f"{note}\ntokenizer: the run's SentencePiece model {tok.source} (not GPT-2's BPE, and not "
        "exported): encode with it and pass the ids"
    )


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    print(export_run(f.workdir, f.out, f.step))  # user errors: one line, exit 2 (run_cli)


def run() -> None:
    """Defines the flags and runs `main` (both commands above)."""
    from absl import flags, logging

    from metalm_jax.cli import run_cli

    flags.DEFINE_string("workdir", None, "run directory with checkpoints/")
    flags.DEFINE_string("out", None, "output directory for config.json + model.safetensors")
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
    flags.mark_flags_as_required(["workdir", "out"])
    logging.set_verbosity(logging.WARNING)
    run_cli(main)


if __name__ == "__main__":
    run()
