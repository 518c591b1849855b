"""BERT-family encoders (BERT, MiniLM, RoBERTa, ELECTRA) -> our TextEncoder.

Architecture mapping (exact, verified against transformers in tests/test_convert.py):
  word + position + token_type embeddings -> LayerNorm   : token_embed + pos_embed -> embed_norm
      token_type is always 0 for our spans, so token_type_embeddings[0] is folded into every
      row of pos_embed; RoBERTa's position ids start at padding_idx + 1, so its table is taken
      from that row on
  ELECTRA's embeddings_project (embedding_size < hidden)  : embed_proj
  post-LN layers, exact (erf) GELU, LayerNorm eps 1e-12   : norm="post", activation, ln_eps
  self-attention query / key / value / output.dense      : attention query / key / value / out
      the key bias is dropped: it adds q.b_k to every logit of a query, which softmax ignores
  intermediate.dense / output.dense                      : mlp wi / wo
  pooler, MLM / discriminator heads                      : not used (reported)
"""

from __future__ import annotations

from metalm_jax.convert.common import ConversionError, HFCheckpoint, TreeBuilder, activation

PREFIXES = ("", "bert.", "roberta.", "electra.", "model.")


def arch(config: dict, where: str) -> dict:
    """Our text_encoder config keys for a BERT-family config.json."""
    kind = config.get("model_type", "bert")
    if kind not in ("bert", "roberta", "electra", "xlm-roberta"):
        raise ConversionError(f"{where}: model_type {kind!r} is not a BERT-family encoder")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(
            f"{where}: position_embedding_type {config['position_embedding_type']!r}; only "
            "absolute positions convert"
        )
    offset = _position_offset(config)
    hidden = config["hidden_size"]
    emb = config.get("embedding_size", hidden)
    return dict(
        num_layers=config["num_hidden_layers"],
        d_model=hidden,
        num_heads=config["num_attention_heads"],
        d_ff=config["intermediate_size"],
        max_len=config["max_position_embeddings"] - offset,
        norm="post",
        positions="learned",
        rel_bias=False,
        activation=activation(config.get("hidden_act", "gelu"), where),
        ln_eps=float(config.get("layer_norm_eps", 1e-12)),
        embed_norm=True,
        embed_scale=False,
        final_norm=True,
        vocab_size=config["vocab_size"],
        embed_dim=0 if emb == hidden else emb,
    )


def _position_offset(config: dict) -> int:
    """RoBERTa numbers positions from padding_idx + 1."""
    if config.get("model_type") in ("roberta", "xlm-roberta"):
        return int(config.get("pad_token_id", 1)) + 1
    return 0


def convert(ckpt: HFCheckpoint) -> tuple[dict, dict]:
    """(our text_encoder config keys, {"text_encoder": the converted parameters})."""
    where = ckpt.path
    a = arch(ckpt.config, where)
    p = ckpt.prefix("embeddings.word_embeddings.weight", PREFIXES)
    out = TreeBuilder(ckpt)
    e = p + "embeddings."
    out.put("token_embed/embedding", ckpt.get(e + "word_embeddings.weight"), e + "word_embeddings")
    pos = ckpt.get(e + "position_embeddings.weight")[_position_offset(ckpt.config) :]
    src = e + "position_embeddings.weight"
    if ckpt.has(e + "token_type_embeddings.weight"):
        pos = pos + ckpt.get(e + "token_type_embeddings.weight")[0]
        src += " + token_type_embeddings.weight[0]"
    out.put("pos_embed", pos, src)
    out.norm("embed_norm", e + "LayerNorm")
    if a["embed_dim"]:
        out.linear_in("embed_proj", p + "embeddings_project")
    heads = a["num_heads"]
    for i in range(a["num_layers"]):
        k, t = f"{p}encoder.layer.{i}.", f"stack/layers_{i}/"
        out.linear_in(t + "attention/query", k + "attention.self.query", heads)
        out.linear_in(t + "attention/key", k + "attention.self.key", heads, bias=False)
        ckpt.drop(k + "attention.self.key.bias", "softmax-invariant (exact)")
        out.linear_in(t + "attention/value", k + "attention.self.value", heads)
        out.linear_out(t + "attention/out", k + "attention.output.dense", heads)
        out.norm(t + "ln_attention", k + "attention.output.LayerNorm")
        out.linear_in(t + "mlp/wi", k + "intermediate.dense")
        out.linear_in(t + "mlp/wo", k + "output.dense")
        out.norm(t + "ln_mlp", k + "output.LayerNorm")
    return a, {"text_encoder": out}
