"""Finetune the tiny run on KJV book groups with the decoder frozen (PAPER.md §3.4).

    python -m metalm_jax.train --config configs/tiny.py                  # pretrain -> runs/tiny
    python -m metalm_jax.train --config configs/finetune_kjv_books.py  # -> runs/finetune_kjv_books
    python -m metalm_jax.evaluate --config configs/finetune_kjv_books.py \
        --workdir runs/finetune_kjv_books

`--config configs/finetune_kjv_books.py:DIR` starts from the run in DIR instead of runs/tiny.
The model, tokenizer and weights come from that run (training/finetune.py): the decoder (embed,
decoder) stays frozen, the text encoder and connector train on verses labelled with their part
of the Bible (10 groups, data/tasks/kjv.py). Each verse goes through the encoder with the
cue "Which part of the Bible is this from? Answer:", the decoder says the group and </s>;
several examples are packed per row. Validation accuracy is measured by generation (exact match)
and by option scoring every eval_every steps and at the end (evals/kjv_books/).
"""

import os

from metalm_jax.config import load_config_file, task_eval, tiny_finetune_schedule


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "tiny.py"))
    c.name = "finetune_kjv_books"
    c.finetune.from_run = arg or "runs/tiny"
    c.finetune.preset = "decoder_frozen"
    c.task.name = "kjv_books"
    # + <s>: 61 of the encoder's 64 positions, all trained by tiny.py's spans (8-63 + <s>); a
    # source run with shorter spans is refused naming the untrained positions (training/finetune.py)
    c.task.max_input_tokens = 60
    c.spans.enc_length = 256  # the encoder grid holds the packed examples' inputs
    tiny_finetune_schedule(c)
    c.evals = {}
    c.evals.kjv_books = task_eval(examples=300, max_tokens=16)  # stops at </s>
    c.train.run_evals = ("kjv_books",)
    return c
