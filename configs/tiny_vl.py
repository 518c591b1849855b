"""Tiny vision-language MetaLM for one CPU: emoji captions (OpenMoji, bundled) mixed with KJV text.

    python -m metalm_jax.train --config configs/tiny_vl.py           # -> runs/tiny_vl
    python -m metalm_jax.caption --workdir runs/tiny_vl --image some.png

configs/tiny.py's text model (128-token rows here) with a joint vision-language encoder docked
next to its text encoder: 32 x 32 images in 8 x 8 patches (16 image tokens) plus a caption
prefix of up to 16 tokens, 2 layers x 64 with modality experts, a 3-layer connector. Half the
rows are KJV text with semi-causal spans, half are packed image-caption pairs.
"""

import os

from metalm_jax.config import captioning_eval, kjv_testament_eval, load_config_file, vqa_eval


def get_config(arg=None):
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py"), arg)
    c.name = "tiny_vl"
    c.data.seq_len = c.model.decoder.max_len = 128
    c.spans.max_len, c.spans.enc_length = 24, 48
    c.model.text_encoder.max_len = 32

    v = c.model.vision
    v.enabled = True
    v.num_layers, v.d_model, v.num_heads, v.d_ff = 2, 64, 4, 256
    v.patch_size, v.image_size, v.text_prefix = 8, 32, 16  # room for "Question: ... Answer:"
    v.connector = "mlp3"

    c.images.enabled = True
    c.images.name = "openmoji"
    c.images.render_size = 64
    c.images.images_per_row = 3
    c.images.text_ratio = 0.5

    c.train.eval_batches = 4
    c.train.sample_tokens = 24
    c.evals.kjv_testament = kjv_testament_eval(max_input_tokens=24, seq_len=128, enc_len=128)
    c.evals.emoji_captions = captioning_eval()  # the paper's "Summarize this image:", greedy
    # zero- and 4-shot emoji VQA, "Question: [q] Answer:", demonstrations from its train split
    c.evals.emoji_vqa = vqa_eval(task="emoji_vqa", shots=(0, 4), examples=258, seq_len=256)
    return c
