"""The majority-class rate of every classification sample the claims study evaluates: what an
accuracy has to beat before it says anything (issue 22).

    python benchmarks/majority_rates.py            # a markdown table, a few seconds

Each row is the sample an evaluator draws, drawn the same way (eval/task_eval.py: a fixed random
sample `shuffled_indices(len(split), seed)[:examples]` of the split), so the rate is the one
next to that evaluator's accuracy: the finetuning runs' 200 validation verses, the multitask
and instruction-tuning evaluations' 100 per task, and the whole validation and test splits
(study v2 reports on test). The in-context testament sample is balanced by construction
(eval/evaluators.kjv_testament_task): 0.500.
"""

from __future__ import annotations

import argparse
import collections

from metalm_jax.config import base_config
from metalm_jax.data.tasks.examples import shuffled_indices
from metalm_jax.data.tasks.kjv import KJV_BOOKS_WORDS
from metalm_jax.data.tasks.registry import open_task

# (what evaluates it, task, verbalizer, split, examples: 0 = the whole split)
SAMPLES = (
    ("finetuning runs (a)-(d), task_eval examples=200", "kjv_books", KJV_BOOKS_WORDS,
     "validation", 200),
    ("multitask evaluator, examples=100", "kjv_books", KJV_BOOKS_WORDS, "validation", 100),
    ("multitask evaluator, examples=100", "kjv_testament", (), "validation", 100),
    ("multitask / instruct held-out evaluator, examples=100", "kjv_book", (), "validation", 100),
    ("whole split", "kjv_books", KJV_BOOKS_WORDS, "validation", 0),
    ("whole split", "kjv_books", KJV_BOOKS_WORDS, "test", 0),
    ("whole split", "kjv_testament", (), "validation", 0),
    ("whole split", "kjv_testament", (), "test", 0),
    ("whole split", "kjv_book", (), "validation", 0),
    ("whole split", "kjv_book", (), "test", 0),
)  # fmt: skip


def majority(task: str, words, split: str, examples: int, seed: int = 0) -> tuple[str, int, int]:
    """(majority label, its count, sample size) of the sample an evaluator draws."""
    t = base_config().task
    t.name, t.verbalizer = task, tuple(words)
    source = open_task(t, split)
    order = shuffled_indices(len(source), seed)
    picked = order[:examples] if examples else order
    counts = collections.Counter(source[int(i)].target for i in picked)
    label, count = counts.most_common(1)[0]
    return label, count, len(picked)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the evaluators' sample seed")
    a = p.parse_args()
    print("| evaluated by | task | split | verses | majority label | majority rate |")
    print("|---|---|---|---|---|---|")
    for what, task, words, split, n in SAMPLES:
        label, count, size = majority(task, words, split, n, a.seed)
        print(f"| {what} | {task} | {split} | {size} | {label} | {count / size:.3f} |")


if __name__ == "__main__":
    main()
