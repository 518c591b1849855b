"""Multitask finetuning at the paper's scale (PAPER.md §4.2) on the TFDS tasks, for users with the
data prepared (data/tasks/tfds_tasks.py says how; most builders need TensorFlow to prepare).

    python -m metalm_jax.train --config configs/multitask_flan.py:gs://bucket/metalm_lm \
        --config.data.tfds_data_dir=gs://bucket/tfds --workdir gs://bucket/multitask_flan

The paper's mixture: 10 clusters of FLAN datasets (those with a training split in TFDS; WSC273
and StoryCloze are evaluation-only), at most 30k examples each, the first template (the paper's
form: instruction, input, the options listed, "TARGET:"), several examples packed per
2048-token row; 20k steps, batch 256, LR 1e-4 (warm-up and decay are our choice); the decoder
frozen (which parameters the paper trains here is in its Table 18, not in the text). XSum and
SAMSum need files downloaded by hand before TFDS can prepare them.
"""

import os

from metalm_jax.config import load_config_file, multitask_eval

PAPER_TASKS = {  # cluster -> registry names (data/tasks/tfds_catalog.py)
    "nli": ("anli_r1", "anli_r2", "anli_r3", "cb", "mnli", "qnli", "rte", "snli", "wnli"),
    "sentiment": ("imdb", "sst2", "sentiment140", "yelp"),
    "paraphrase": ("qqp", "mrpc", "paws_wiki"),
    "coreference": ("dpr", "winogrande"),
    "commonsense": ("hellaswag", "piqa", "copa"),
    "reading_comprehension": ("drop", "squad_v1", "squad_v2", "openbookqa", "boolq"),
    "misc": ("cola", "wic", "trec"),
    "closed_book_qa": ("arc_easy", "nq_open"),
    "struct_to_text": ("common_gen", "e2e_nlg"),
    "summarization": ("aeslc", "samsum", "xsum"),
}


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "metalm_lm.py"))
    c.name = "multitask_flan"
    c.finetune.from_run = arg or "runs/metalm_lm"
    c.finetune.preset = "decoder_frozen"
    c.task.name = "mixture"
    c.task.mixture = [dict(name=t) for ts in PAPER_TASKS.values() for t in ts]
    c.task.cap = 30_000
    c.task.max_input_tokens = 510  # the encoder's 512 positions, with <s>
    c.task.max_target_tokens = 128
    c.spans.enc_length = 2048  # the packed examples' inputs
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 500
    c.optim.schedule = "linear"
    c.train.steps = 20_000
    c.train.batch_size = 256
    c.train.grad_accum_steps = 2
    c.train.eval_every = 2000
    c.train.sample_tokens = 0
    c.evals = {}
    c.evals.multitask = multitask_eval(examples=500, max_tokens=64, batch_size=64)
    return c
