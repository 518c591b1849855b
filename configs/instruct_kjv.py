"""Instruction tuning on the offline KJV tasks with a held-out cluster (PAPER.md §4.2, §3.5).

    python -m metalm_jax.train --config configs/instruct_kjv.py            # held out: reference
    python -m metalm_jax.train --config configs/instruct_kjv.py:topic      # held out: topic
    python -m metalm_jax.evaluate --config configs/instruct_kjv.py --workdir runs/instruct_kjv

The FLAN protocol at small scale: every example gets one of its task's 10 templates at random
(some "turned around": produce the verse from its label, the start of a verse from its end);
the held-out cluster's tasks are left out of tuning and evaluated zero-shot with 5 templates,
mean and best (evals/held_out/). As NLI and paraphrase exclude each other in the paper, the
two "where is this verse from" clusters (topic and reference) exclude each other here. The
argument is the held-out cluster (default reference); the run starts from runs/tiny.
"""

import os

from metalm_jax.config import load_config_file, multitask_eval
from metalm_jax.data.tasks.kjv import KJV_BOOKS_WORDS, TEMPLATES
from metalm_jax.data.tasks.registry import task_spec


def _clusters() -> dict[str, tuple[str, ...]]:
    """Cluster -> its KJV tasks, as the task registry has them (data/tasks/kjv.py): topic
    (kjv_books, kjv_testament), reference (kjv_book), completion (kjv_completion,
    kjv_next_verse)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in TEMPLATES:
        cluster = task_spec(name).cluster
        out[cluster] = (*out.get(cluster, ()), name)
    return out


CLUSTERS = _clusters()
# kjv_books with one-piece label words the tiny decoder can say ("law", "kings", ...)
WORDS = {"kjv_books": dict(verbalizer=KJV_BOOKS_WORDS)}


def _entry(task: str) -> dict:
    return dict(name=task, **WORDS.get(task, {}))


EXCLUDE_TOGETHER = {"topic": "reference", "reference": "topic"}


def get_config(arg=None):
    held_out = arg or "reference"
    if held_out not in CLUSTERS:
        raise ValueError(
            f"configs/instruct_kjv.py: held-out cluster {held_out!r}: {list(CLUSTERS)}"
        )
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "finetune_kjv_books.py"))
    c.name = "instruct_kjv"
    skip = {held_out, EXCLUDE_TOGETHER.get(held_out)}
    c.task.name = "mixture"
    c.task.mixture = [_entry(t) for cl, ts in CLUSTERS.items() if cl not in skip for t in ts]
    c.task.template_index = -1  # one of the task's templates per example
    c.task.max_target_tokens = 32  # turned templates ask for verses
    c.train.steps = 400
    c.evals = {}
    c.evals.held_out = multitask_eval(
        tasks=[_entry(t) for t in CLUSTERS[held_out]], templates=5, examples=100,
        max_tokens=24,
    )  # fmt: skip
    c.evals.tuned = multitask_eval(examples=100, max_tokens=24)  # the tuning tasks, template 0
    c.train.run_evals = ("held_out",)
    return c
