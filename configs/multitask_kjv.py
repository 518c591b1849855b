"""Multitask finetuning of the tiny run on the offline KJV tasks (PAPER.md §4.2, small scale).

    python -m metalm_jax.train --config configs/tiny.py                  # pretrain -> runs/tiny
    python -m metalm_jax.train --config configs/multitask_kjv.py         # -> runs/multitask_kjv
    python -m metalm_jax.evaluate --config configs/multitask_kjv.py --workdir runs/multitask_kjv

`--config configs/multitask_kjv.py:DIR` starts from the run in DIR. Four tasks in three clusters
(data/tasks/kjv.py): topic (kjv_books, kjv_testament: the paper's multiple-choice form with
the options listed, template 1), reference (kjv_book, 66 books: the options are not listed, they
would not fit the tiny encoder) and completion (kjv_completion: the verse's second half, token
F1). At most task.cap examples per task, sampled in proportion, several packed per row; the
decoder frozen. Evaluation in the paper's way per task and per cluster (evals/multitask/).
"""

import os

from metalm_jax.config import load_config_file, multitask_eval
from metalm_jax.data.tasks.kjv import KJV_BOOKS_WORDS

TASKS = [
    # one-piece label words the tiny decoder can say ("law", "kings", ...), not "Major Prophets"
    dict(name="kjv_books", template_index=1, verbalizer=KJV_BOOKS_WORDS),
    dict(name="kjv_testament", template_index=1),
    dict(name="kjv_book", template_index=0),
    dict(name="kjv_completion", template_index=0),
]


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "finetune_kjv_books.py"), arg)
    c.name = "multitask_kjv"
    c.task.name = "mixture"
    c.task.mixture = [dict(t) for t in TASKS]
    c.task.cap = 30_000
    c.task.max_target_tokens = 24  # completions are half a verse
    c.train.steps = 400
    c.evals = {}
    c.evals.multitask = multitask_eval(examples=100, max_tokens=24)
    c.train.run_evals = ("multitask",)
    return c
