"""Supervised tasks (finetuning and their evaluation): examples and templates (examples.py), the
one task registry (registry.py), the tasks themselves (jsonl.py, kjv.py, emoji.py, and the TFDS
tasks: tfds_tasks.py reads what tfds_catalog.py lists), multitask mixtures (mixture.py) and task
examples as packed rows (task_rows.py).

Every task module registers its tasks when imported; importing them here, whatever module of the
package is asked for, is what makes every task known to the registry's lookups.
"""

from metalm_jax.data.tasks import emoji, jsonl, kjv, tfds_catalog  # noqa: F401 (they register)
