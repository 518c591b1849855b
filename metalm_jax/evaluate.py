"""Run the configured evaluators on a checkpoint:

    python -m metalm_jax.evaluate --config configs/tiny.py --workdir runs/tiny [--step N]
        [--only kjv_testament]

Writes <workdir>/evals/<name>/{metrics.json, predictions.jsonl} and prints the metrics. The
config must match the checkpoint's model (checked); the evaluators come from this config's
`evals` section, so evaluations can be added after training.
"""

from __future__ import annotations

import json


def main(argv):
    from absl import flags

    from metalm_jax.eval.evaluators import build_evals
    from metalm_jax.eval.load import load_run

    del argv
    f = flags.FLAGS
    cfg = f.config
    _, tok, trainer, params = load_run(f.workdir, f.step, cfg)
    evals = build_evals(cfg, f.workdir, trainer, tok, f.only)  # unknown --only names: an error
    if not evals.names:
        raise SystemExit(f"config {cfg.name} has no evals")
    print(json.dumps(evals.run(params), indent=2))


if __name__ == "__main__":
    from absl import flags, logging
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "experiment config", lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory with checkpoints/ and tokenizer.model")
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
    flags.DEFINE_list("only", None, "run only these evaluators")
    flags.mark_flags_as_required(["config", "workdir"])
    logging.set_verbosity(logging.WARNING)
    from metalm_jax.cli import run_cli

    run_cli(main)  # user errors: one line, exit 2
