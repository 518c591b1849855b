"""Language-only MetaLM at the paper's sizes (PAPER.md §1.1, §3.1). A pod-scale config.

    python -m metalm_jax.train --config configs/metalm_lm.py --workdir gs://bucket/metalm_lm

Decoder 24 x 2048 x 32 heads (~1.3B with a 64k tied vocabulary), sinusoidal positions, DeepNorm,
max length 2048, dropout 0. Text encoder 24 x 1024 x 16 heads (~366M), learned absolute positions
plus T5 relative bias, max 512, dropout 0.1, frozen except its top 2 layers. Linear connector.

The paper freezes a *pretrained* encoder (an ELECTRA-style replaced-token-detection model, not
released). Dock yours through `init` before training, e.g. an ELECTRA-large discriminator
converted from its Hugging Face directory (24 x 1024, its own WordPiece tokenizer):

    c.init = [dict(format="hf_bert", source="/models/electra-large-discriminator")]
    convert.apply_arch(c, "hf_bert", "/models/electra-large-discriminator")
    c.model.text_encoder.tokenizer = "/models/electra-large-discriminator"

Without it the run stops at the start (optim.frozen would freeze random weights: see
training/finetune.py check_frozen_loaded); set optim.allow_frozen_random=True to train that way
anyway, or drop optim.frozen to train the encoder from scratch.

Batch 1024 x 2048, Adam at peak LR 6e-4 with warm-up, 300k steps. FFN width 4H and GELU,
warm-up length, decay shape and Adam betas are not in the paper's text (our choices).
The default corpus is the bundled KJV; point data.name='files' at a real corpus for real runs.
"""

from metalm_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.name = "metalm_lm"
    c.data.vocab_size = 64000
    c.data.seq_len = 2048
    c.spans.min_len, c.spans.max_len = 64, 128
    c.spans.enc_length = 640

    d = c.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff = 24, 2048, 32, 8192
    d.max_len = 2048
    d.dropout = 0.0
    # one scanned block (fast compile); remat "minimal" keeps the matmul outputs without batch
    # dims and recomputes the rest (metalm_jax.aot on v5p-128: 59.6 of 95 GiB per chip,
    # est. MFU 72.3%; "full" remat: 24.2 GiB, 61.2% -- benchmarks/RESULTS.md, issue 12)
    d.scan, d.remat = True, "minimal"
    e = c.model.text_encoder
    e.num_layers, e.d_model, e.num_heads, e.d_ff = 24, 1024, 16, 4096
    e.max_len = 512
    e.dropout = 0.1
    e.remat = "full"  # unrolled (the frozen layers are named by regex), rematerialized
    c.model.dtype = "bfloat16"

    c.optim.name = "adam"
    c.optim.lr = 6e-4
    c.optim.b2 = 0.98
    c.optim.warmup_steps = 3750
    c.init = []  # the pretrained encoder goes here (see the docstring)
    c.optim.frozen = [  # (/|$): pos_embed is a leaf, not a module
        r"^text_encoder/(token_embed|pos_embed|rel_bias|stack/layers_([0-9]|1[0-9]|2[01]))(/|$)"
    ]

    c.mesh.shape = (1, -1, 1)  # FSDP over all chips (checked with metalm_jax.aot on v5p-128)
    c.train.steps = 300_000
    c.train.fused_xent = False  # the AOT figures (RESULTS.md) were compiled without it
    c.train.batch_size = 1024
    c.train.grad_accum_steps = 1  # the whole batch at once on v5p-128 (16 rows per chip); raise
    #   it for chips with less HBM -- v6e-64: 2 (peak 29.0 of 32 GiB), v5e-64: 4 (15.0 of 16
    #   GiB), as compiled by metalm_jax.aot (benchmarks/RESULTS.md, "Pod efficiency")
    c.train.log_every = 50
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    return c
