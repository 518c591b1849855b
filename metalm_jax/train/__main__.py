"""`python -m metalm_jax.train [--config configs/tiny.py] [--config.a.b=v] [--workdir DIR]
[--multihost [--coordinator_address H:P --num_processes N --process_id I]]`."""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.py")

config_flags.DEFINE_config_file(
    "config", os.path.normpath(DEFAULT_CONFIG), "experiment config file", lock_config=True
)
flags.DEFINE_string("workdir", None, "run directory (default: runs/<config name>)")
flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize (TPU pods, Slurm, ...)")
flags.DEFINE_string("coordinator_address", None, "with --multihost on CPU/GPU: host:port")
flags.DEFINE_integer("num_processes", None, "with --coordinator_address")
flags.DEFINE_integer("process_id", None, "with --coordinator_address")


def main(argv):
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from metalm_jax.loop import train_and_evaluate

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file at INFO
    f = flags.FLAGS
    if f.multihost:
        from metalm_jax.parallel.distributed import initialize

        initialize(f.coordinator_address, f.num_processes, f.process_id)
    from metalm_jax.training.preemption import Stopped

    cfg = f.config
    try:
        train_and_evaluate(cfg, flags.FLAGS.workdir or os.path.join("runs", cfg.name))
    except Stopped as e:  # the checkpoint is saved: a clean exit, 0 on SIGTERM, 130 on Ctrl-C
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    from metalm_jax.cli import run_cli

    run_cli(main)  # user errors: one line, exit 2 (metalm_jax/cli.py)
