"""Tiny vision-language MetaLM for one CPU: emoji captions (OpenMoji, bundled) mixed with KJV text.

    python -m metalm_jax.train --config configs/tiny_vl.py           # -> runs/tiny_vl
    python -m metalm_jax.caption --workdir runs/tiny_vl --image some.png

The tiny text model (configs/tiny.py) with a joint vision-language encoder docked next to its
text encoder: 32 x 32 images in 8 x 8 patches (16 image tokens) plus a caption prefix of up to
8 tokens, 2 layers x 64 with modality experts, a 3-layer connector. Half the rows are KJV text
with semi-causal spans, half are packed image-caption pairs.
"""

from metalm_jax.config import base_config, captioning_eval, kjv_testament_eval, perplexity_eval


def get_config(arg=None):
    del arg
    c = base_config()
    c.name = "tiny_vl"
    c.data.vocab_size = 4096
    c.data.seq_len = 128
    c.spans.min_len, c.spans.max_len = 8, 24
    c.spans.enc_length = 48

    d = c.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff, d.max_len = 4, 256, 4, 1024, 128
    d.norm = "pre"  # see configs/tiny.py
    e = c.model.text_encoder
    e.num_layers, e.d_model, e.num_heads, e.d_ff, e.max_len = 3, 128, 4, 512, 32
    v = c.model.vision
    v.enabled = True
    v.num_layers, v.d_model, v.num_heads, v.d_ff = 2, 64, 4, 256
    v.patch_size, v.image_size, v.text_prefix = 8, 32, 8
    v.connector = "mlp3"

    c.images.enabled = True
    c.images.name = "openmoji"
    c.images.render_size = 64
    c.images.images_per_row = 3
    c.images.text_ratio = 0.5

    c.optim.lr = 2e-3
    c.optim.warmup_steps = 30
    c.optim.frozen = [r"^text_encoder/(token_embed|pos_embed|rel_bias|stack/layers_0)/"]

    c.train.steps = 400
    c.train.batch_size = 8
    c.train.log_every = 25
    c.train.eval_every = 100
    c.train.eval_batches = 4
    c.train.checkpoint_every = 200
    c.train.sample_tokens = 24
    c.evals.perplexity = perplexity_eval()
    c.evals.kjv_testament = kjv_testament_eval(max_input_tokens=24, seq_len=128, enc_len=128)
    c.evals.emoji_captions = captioning_eval()
    return c
