"""`python -m metalm_jax.prepare --config C [--config.key=value ...] [--out DIR] [--workers N]
[--part i/n] [--shard_mb M]`: a text corpus (data.files) as ArrayRecord shards of packed decoder
rows, and with images.enabled the image-text pairs (images.files) as rows of pairs with their
images resized for the model, for training with `--config.data.prepared_dir=DIR` (the work:
data/feed/prepare.py).

The config file and keys are the training run's. `--out` defaults to data.prepared_dir, so one
`--config.data.prepared_dir=DIR` serves both commands. Run again after a crash or a kill: the
shards in the ledger are kept. `--part i/n` prepares every n-th shard from the i-th (a job
array; part 0 trains the tokenizer); the part that finishes last writes the manifest.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py")

config_flags.DEFINE_config_file(
    "config", os.path.normpath(DEFAULT_CONFIG), "experiment config file", lock_config=True
)
flags.DEFINE_string("out", None, "output directory, local or gs:// (default: data.prepared_dir)")
flags.DEFINE_integer("workers", 1, "processes on this host, one input shard each at a time")
flags.DEFINE_string("part", "0/1", "i/n: prepare every n-th input shard from the i-th")
flags.DEFINE_float("shard_mb", 256.0, "a .jsonl / Parquet file larger than this is split")


def _part(text: str) -> tuple[int, int]:
    from metalm_jax.types import ConfigError

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--part {text!r}: expected i/n, e.g. 0/4") from None
    return i, n


def main(argv):
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from metalm_jax.data.feed.prepare import prepare
    from metalm_jax.model.build import image_layout

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    say = lambda line: print(line, flush=True)
    layout = image_layout(f.config) if f.config.images.enabled else None  # the model's
    prepare(f.config, f.out or "", f.workers, _part(f.part), f.shard_mb, log=say, layout=layout)
    sys.stdout.flush()


if __name__ == "__main__":
    from metalm_jax.cli import run_cli

    run_cli(main)  # user errors: one line, exit 2 (metalm_jax/cli.py)
