"""Vision-language MetaLM at the paper's sizes (PAPER.md §1.2, §3.2). A pod-scale config.

    python -m metalm_jax.train --config configs/metalm_vl.py --workdir gs://bucket/metalm_vl

Decoder as GPT-2 medium: 24 x 1024 x 16 heads, sinusoidal positions, a 50,257-piece vocabulary
(GPT-2's size; ours is SentencePiece), ~353M parameters. A 12-layer joint vision-language encoder
(VLMo-Base-like: 768 wide, 12 heads, patch 16 at 224, two modality experts) reading the image and
a caption prefix of up to 32 tokens; the paper's three-layer connector. No separate text encoder:
text-only rows are plain LM rows. AdamW (0.9, 0.98), weight decay 0.01, LR 1e-4, 2,500 warm-up
steps then linear decay, 350k steps, batch 256, dropout 0.1. The defaults are the bundled emoji
captions; point images.name='files' (or a standard set) at real pairs for real runs.
"""

from metalm_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.name = "metalm_vl"
    c.data.vocab_size = 50257
    c.data.seq_len = 512

    d = c.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff, d.max_len = 24, 1024, 16, 4096, 1024
    d.norm = "pre"  # GPT-2's placement
    d.dropout = 0.1
    # no rematerialization: 6.1 GiB of 95 per v5p chip as compiled for v5p-128 (RESULTS.md, "Pod
    # efficiency: configs/metalm_vl.py"), so recomputing the forward buys nothing
    d.scan, d.remat = True, "none"
    c.model.text_encoder.enabled = False
    v = c.model.vision
    v.enabled = True
    v.num_layers, v.d_model, v.num_heads, v.d_ff = 12, 768, 12, 3072
    v.patch_size, v.image_size, v.text_prefix = 16, 224, 32
    v.experts = True
    v.dropout = 0.1
    v.remat = "none"
    v.connector = "mlp3"
    c.model.dtype = "bfloat16"

    c.images.enabled = True
    c.images.render_size = 224
    c.images.images_per_row = 1
    c.images.text_ratio = 0.5

    c.optim.name = "adamw"
    c.optim.b1, c.optim.b2 = 0.9, 0.98
    c.optim.weight_decay = 0.01
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 2500
    c.optim.schedule = "linear"
    c.optim.end_lr_frac = 0.0

    c.mesh.shape = (1, -1, 1)
    c.train.steps = 350_000
    c.train.fused_xent = True  # 8 GB/chip less memory traffic per step on v5p-128 (RESULTS.md)
    c.train.batch_size = 256
    c.train.log_every = 50
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    return c
