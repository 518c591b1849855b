"""The micro test config as a config file, for tests that drive the real CLI.

python -m metalm_jax.train --config tests/micro_config.py:/path/corpus.jsonl,/path/tfds
"""

from metalm_jax import testing


def get_config(arg):
    corpus, data_dir = arg.split(",")
    return testing.micro_config([corpus], data_dir=data_dir)
