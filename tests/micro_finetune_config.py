"""The micro finetuning config as a config file, for tests that drive the real CLI.

python -m metalm_jax.train --config tests/micro_finetune_config.py:/path/source_run,/path/tfds
"""

from metalm_jax import testing
from metalm_jax.config import task_eval


def get_config(arg):
    source, data_dir = arg.split(",")
    c = testing.micro_finetune_config(source, data_dir=data_dir)
    c.evals = {"task": task_eval(examples=6, max_tokens=4, batch_size=8)}
    c.train.run_evals = ("task",)
    return c
