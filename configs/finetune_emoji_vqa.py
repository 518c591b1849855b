"""Finetune the tiny vision-language run on emoji VQA with the decoder frozen (PAPER.md §4.5).

    python -m metalm_jax.train --config configs/tiny_vl.py              # pretrain -> runs/tiny_vl
    python -m metalm_jax.evaluate --config configs/finetune_emoji_vqa.py --workdir runs/tiny_vl
        # the zero-shot figure: the pretrained run on the same questions
    python -m metalm_jax.train --config configs/finetune_emoji_vqa.py   # -> runs/finetune_emoji_vqa

`--config configs/finetune_emoji_vqa.py:DIR` starts from the run in DIR instead of runs/tiny_vl.
Questions about OpenMoji emojis that their Unicode names answer (what is it, skin tone, man or
woman, hair, flag: data/tasks/emoji.py), in the paper's VQA format: the joint VL encoder reads
the image with "Question: [q] Answer:", the decoder says the answer and </s>. The decoder stays
frozen; the VL encoder and its connector train. Validation VQA accuracy (by generation, official
normalization) every eval_every steps and at the end (evals/emoji_vqa/).
"""

import os

from metalm_jax.config import load_config_file, task_eval, tiny_finetune_schedule


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "tiny_vl.py"))
    c.name = "finetune_emoji_vqa"
    c.finetune.from_run = arg or "runs/tiny_vl"
    c.finetune.preset = "decoder_frozen"
    c.task.name = "emoji_vqa"
    c.task.max_target_tokens = 10
    c.task.eval_examples = 258
    c.images.images_per_row = 4  # 4 (image + question + answer) examples fill a 128-token row
    tiny_finetune_schedule(c)
    c.evals = {}
    c.evals.emoji_vqa = task_eval(examples=258, max_tokens=10)  # the whole validation split
    c.train.run_evals = ("emoji_vqa",)
    return c
