"""Finetune the tiny vision-language run on emoji captions in the paper's captioning format.

    python -m metalm_jax.train --config configs/finetune_emoji_captions.py  # from runs/tiny_vl

PAPER.md §4.5: the encoder gets the image and "caption:", the decoder says the caption (here the
emoji's Unicode names) and </s>. Decoder frozen; validation BLEU / ROUGE-L / CIDEr by greedy
generation (evals/emoji_captions/). `--config configs/finetune_emoji_captions.py:DIR` starts
from the run in DIR.
"""

import os

from metalm_jax.config import load_config_file, task_eval


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "finetune_emoji_vqa.py"), arg)
    c.name = "finetune_emoji_captions"
    c.task.name = "emoji_captions"
    c.task.max_target_tokens = 24
    c.task.eval_examples = 195
    c.images.images_per_row = 3
    c.evals = {}
    c.evals.emoji_captions = task_eval(examples=195, max_tokens=24)
    c.train.run_evals = ("emoji_captions",)
    return c
