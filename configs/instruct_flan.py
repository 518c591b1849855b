"""Instruction tuning at the paper's scale (PAPER.md §4.2, §3.5) with a held-out cluster, for
users with the TFDS data prepared.

    python -m metalm_jax.train --config configs/instruct_flan.py:nli \
        --config.finetune.from_run=gs://bucket/metalm_lm --config.data.tfds_data_dir=gs://bucket/tfds

The multitask mixture (configs/multitask_flan.py) without the summarization cluster and without
the held-out cluster (the argument: nli | sentiment | paraphrase | reading_comprehension, the
paper's four); NLI and paraphrase exclude each other. One of the task's templates per example
(the registry has 3 per task; the paper used 10, some turned around); 30k steps, batch 512,
LR 1e-4 (the paper's examples are up to 1,024 tokens; inputs here up to 510, the encoder's 512
positions). The held-out cluster is evaluated zero-shot with every
template, mean and best (evals/held_out/).
"""

import os

from metalm_jax.config import load_config_file, multitask_eval

EXCLUDE_TOGETHER = {"nli": "paraphrase", "paraphrase": "nli"}


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    flan = load_config_file(os.path.join(here, "multitask_flan.py"))
    held_out = arg or "nli"
    clusters = dict(_paper_tasks())
    if held_out not in clusters:
        raise ValueError(
            f"configs/instruct_flan.py: held-out cluster {held_out!r}: {list(clusters)}"
        )
    skip = {held_out, EXCLUDE_TOGETHER.get(held_out), "summarization"}
    c = flan
    c.name = "instruct_flan"
    c.task.mixture = [dict(name=t) for cl, ts in clusters.items() if cl not in skip for t in ts]
    c.task.template_index = -1
    c.task.max_input_tokens = 510
    c.optim.lr = 1e-4
    c.train.steps = 30_000
    c.train.batch_size = 512
    c.train.grad_accum_steps = 4
    c.evals = {}
    c.evals.held_out = multitask_eval(
        tasks=[dict(name=t) for t in clusters[held_out]], templates=5, examples=500,
        max_tokens=64, batch_size=64,
    )  # fmt: skip
    return c


def _paper_tasks():
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("multitask_flan", f"{here}/multitask_flan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PAPER_TASKS
