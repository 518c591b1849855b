"""Hugging Face GPT-2 <-> our decoder (token embedding, learned positions, pre-LN stack).

Import (load_hf("hf_gpt2", path)) maps a GPT2LMHeadModel or GPT2Model checkpoint onto MetaLM's
`embed`, `pos_embed` and `decoder`; export writes those back as a GPT2LMHeadModel directory
(the command, which loads a run, is metalm_jax/export.py; this name runs it too):

    python -m metalm_jax.convert.gpt2 --workdir RUN_DIR --out DIR [--step N]

Architecture mapping (exact, verified against transformers in tests/test_convert_gpt2.py):
  wte / wpe                                : embed/embedding, pos_embed (a top-level array)
      no sqrt(D) on the token embeddings   : embed_scale=False
  pre-LN blocks, LayerNorm eps             : norm="pre", ln_eps
  h.i.ln_1 / ln_2                          : layers_i/ln_attention, ln_mlp
  h.i.attn.c_attn ([D, 3D], Conv1D = x @ W): attention query | key | value, each [D, N, H]
      the key third of the bias is dropped: it adds q.b_k to every logit of a query, which
      softmax ignores (export writes zeros there)
  h.i.attn.c_proj                          : attention out [N, H, D] + out_bias
  h.i.mlp.c_fc / c_proj, gelu_new          : mlp wi / wo, activation "gelu" (tanh approximation)
  ln_f                                     : decoder/ln_final (final_norm=True)
  lm_head (tied to wte)                    : our LM head is the embedding (an untied head is
                                             refused)

Conv1D weights are stored [in, out], our kernels' layout, so nothing is transposed. Not
convertible: scale_attn_weights=False, scale_attn_by_inverse_layer_idx, cross-attention.
reorder_and_upcast_attn only changes the order of float32 operations and is accepted.
"""

from __future__ import annotations

import json
import os

import numpy as np

from metalm_jax.convert.common import (
    HF_ACTIVATIONS,
    ConversionError,
    HFCheckpoint,
    TreeBuilder,
    activation,
    flatten,
)

PREFIXES = ("transformer.", "")

# our activation -> GPT-2's activation_function (all exact in transformers' GPT2MLP)
GPT2_ACTIVATIONS = {"gelu": "gelu_new", "gelu_exact": "gelu", "quick_gelu": "quick_gelu"}
GPT2_ACTIVATIONS.update({ours: hf for hf, ours in HF_ACTIVATIONS.items() if hf == ours})


def arch(config: dict, where: str) -> dict:
    """Our model.decoder keys (and data.vocab_size) for a GPT-2 config.json."""
    kind = config.get("model_type", "gpt2")
    if kind != "gpt2":
        raise ConversionError(f"{where}: model_type {kind!r} is not GPT-2")
    refused = {
        "scale_attn_weights": (False, "our attention always scales logits by 1/sqrt(head_dim)"),
        "scale_attn_by_inverse_layer_idx": (True, "per-layer logit scaling is not supported"),
        "add_cross_attention": (True, "our decoder has no cross-attention"),
    }
    for key, (bad, why) in refused.items():
        default = key == "scale_attn_weights"
        if bool(config.get(key, default)) == bad:
            raise ConversionError(f"{where}: {key}={bad} does not convert ({why})")
    d = config["n_embd"]
    if d % config["n_head"]:
        raise ConversionError(f"{where}: n_embd={d} is not divisible by n_head={config['n_head']}")
    return {
        "num_layers": config["n_layer"],
        "d_model": d,
        "num_heads": config["n_head"],
        "d_ff": config.get("n_inner") or 4 * d,
        "max_len": config["n_positions"],
        "norm": "pre",
        "positions": "learned",
        "activation": activation(config.get("activation_function", "gelu_new"), where),
        "ln_eps": float(config.get("layer_norm_epsilon", 1e-5)),
        "embed_norm": False,
        "embed_scale": False,
        "final_norm": True,
        "data.vocab_size": config["vocab_size"],
    }


def convert(ckpt: HFCheckpoint) -> tuple[dict, dict]:
    """(our config keys, {"embed", "pos_embed", "decoder": TreeBuilder}); pos_embed's tree is
    the position table itself (MetaLM's top-level `pos_embed` parameter is one array)."""
    where = ckpt.path
    a = arch(ckpt.config, where)
    p = ckpt.prefix("wte.weight", PREFIXES)
    D, N, L = a["d_model"], a["num_heads"], a["num_layers"]
    H = D // N
    embed, pos, dec = TreeBuilder(ckpt), TreeBuilder(ckpt), TreeBuilder(ckpt)
    wte = ckpt.get(p + "wte.weight")
    embed.put("embedding", wte, p + "wte.weight")
    pos.put("", ckpt.get(p + "wpe.weight"), p + "wpe.weight")
    for i in range(L):
        k, t = f"{p}h.{i}.", f"layers_{i}/"
        dec.norm(t + "ln_attention", k + "ln_1")
        w = ckpt.get(k + "attn.c_attn.weight", (D, 3 * D))
        b = ckpt.get(k + "attn.c_attn.bias", (3 * D,))
        for j, name in enumerate(("query", "key", "value")):
            cols = f"[:, {j * D}:{(j + 1) * D}]"
            dec.put(
                t + f"attention/{name}",
                w[:, j * D : (j + 1) * D].reshape(D, N, H),
                k + "attn.c_attn.weight" + cols,
            )
            if name != "key":
                dec.put(
                    t + f"attention/{name}_bias",
                    b[j * D : (j + 1) * D].reshape(N, H),
                    k + f"attn.c_attn.bias[{j * D}:{(j + 1) * D}]",
                )
        ckpt.drop(
            k + "attn.c_attn.bias",
            f"key part [{D}:{2 * D}] softmax-invariant (exact); query and value parts used",
        )
        wo = ckpt.get(k + "attn.c_proj.weight", (D, D))
        dec.put(t + "attention/out", wo.reshape(N, H, D), k + "attn.c_proj.weight")
        dec.put(t + "attention/out_bias", ckpt.get(k + "attn.c_proj.bias"), k + "attn.c_proj.bias")
        dec.norm(t + "ln_mlp", k + "ln_2")
        for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):
            src = f"{k}mlp.{theirs}"
            dec.put(t + f"mlp/{ours}", ckpt.get(src + ".weight"), src + ".weight")
            dec.put(t + f"mlp/{ours}_bias", ckpt.get(src + ".bias"), src + ".bias")
    dec.norm("ln_final", p + "ln_f")
    if ckpt.has("lm_head.weight"):
        head = ckpt.get("lm_head.weight")
        if head.shape != wte.shape or not np.array_equal(head, wte):
            raise ConversionError(
                f"{where}: lm_head.weight {head.shape} differs from {p}wte.weight {wte.shape}: "
                "untied LM heads are not supported (our LM head is the token embedding)"
            )
        ckpt.drop("lm_head.weight", f"tied to {p}wte.weight (our LM head is the embedding)")
    return a, {"embed": embed, "pos_embed": pos, "decoder": dec}


# --- export -----------------------------------------------------------------------------------


def _gpt2_shaped(cfg) -> None:
    """Raises naming every model.decoder key that a GPT-2 cannot express."""
    dec = cfg.model.decoder
    need = {
        "norm": "pre",
        "positions": "learned",
        "embed_scale": False,
        "embed_norm": False,
        "final_norm": True,
    }
    bad = [
        f"model.decoder.{k}={dec[k]!r} (GPT-2 needs {v!r})" for k, v in need.items() if dec[k] != v
    ]
    if dec.activation not in GPT2_ACTIVATIONS:
        bad.append(
            f"model.decoder.activation={dec.activation!r} (GPT-2 needs one of "
            f"{sorted(GPT2_ACTIVATIONS)}; 'gelu' is GPT-2's own)"
        )
    if bad:
        raise ConversionError("this decoder is not GPT-2-shaped: " + "; ".join(bad))


def _layers(decoder: dict, num_layers: int) -> list[dict]:
    """Per-layer parameter dicts from an unrolled (layers_i) or scanned (layers) stack."""
    if "layers" in decoder:
        import jax

        stacked = decoder["layers"]
        n = {np.shape(x)[0] for x in jax.tree.leaves(stacked)}
        if n != {num_layers}:
            raise ConversionError(
                f"decoder/layers: leading axis {sorted(n)}, model.decoder.num_layers={num_layers}"
            )
        return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers)]
    missing = [f"layers_{i}" for i in range(num_layers) if f"layers_{i}" not in decoder]
    if missing:
        raise ConversionError(f"decoder: no {missing} (model.decoder.num_layers={num_layers})")
    return [decoder[f"layers_{i}"] for i in range(num_layers)]


class _Taker:
    """Reads our parameters by path, remembering which were read (the rest is an error)."""

    def __init__(self, tree: dict, where: str):
        self.flat = {k: np.asarray(v, np.float32) for k, v in flatten(tree).items()}
        self.where = where
        self.read: set[str] = set()

    def __call__(self, path: str, shape: tuple) -> np.ndarray:
        if path not in self.flat:
            raise ConversionError(f"{self.where}/{path}: missing from the parameters")
        x = self.flat[path]
        if x.shape != tuple(shape):
            raise ConversionError(
                f"{self.where}/{path}: shape {x.shape}, expected {tuple(shape)} from the config"
            )
        self.read.add(path)
        return x

    def check_all_read(self) -> None:
        extra = sorted(set(self.flat) - self.read)
        if extra:
            raise ConversionError(f"{self.where}: parameters a GPT-2 has no place for: {extra}")


def gpt2_config(cfg, ids=None) -> dict:
    """The config.json of the exported GPT2LMHeadModel; `ids`: the run tokenizer's special ids
    (data/tokenizer.SpecialIds; None: SentencePiece's)."""
    from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS

    ids = ids or SENTENCEPIECE_IDS

    dec = cfg.model.decoder
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": int(cfg.data.vocab_size),
        "n_positions": int(dec.max_len),
        "n_embd": int(dec.d_model),
        "n_layer": int(dec.num_layers),
        "n_head": int(dec.num_heads),
        "n_inner": int(dec.d_ff),
        "activation_function": GPT2_ACTIVATIONS[dec.activation],
        "layer_norm_epsilon": float(dec.ln_eps),
        "resid_pdrop": float(dec.dropout),  # ours: dropout on each residual branch
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": ids.bos,  # the run tokenizer's <s>, </d> (ends a document), <pad>
        "eos_token_id": ids.doc_end,
        "pad_token_id": ids.pad,
        "dtype": "float32",
    }


def export(params: dict, cfg, out_dir: str, ids=None) -> str:
    """Writes our decoder (embed, pos_embed, decoder) as a Hugging Face GPT2LMHeadModel
    directory (config.json + model.safetensors); returns a note naming what was left out.
    `ids`: the run tokenizer's special ids for config.json (None: SentencePiece's).

    `params` are MetaLM's (unboxed; decoder unrolled or scanned), `cfg` the experiment config.
    The LM head is tied to wte, as transformers saves GPT-2 (no lm_head.weight is written).
    """
    from safetensors.numpy import save_file

    _gpt2_shaped(cfg)
    dec = cfg.model.decoder
    D, N, F, L = dec.d_model, dec.num_heads, dec.d_ff, dec.num_layers
    H = D // N
    V, P = cfg.data.vocab_size, dec.max_len
    for name in ("embed", "pos_embed", "decoder"):
        if name not in params:
            raise ConversionError(f"the parameters have no {name!r} (top level: {sorted(params)})")
    top = _Taker({"embed": params["embed"], "pos_embed": params["pos_embed"]}, "params")
    out = {
        "transformer.wte.weight": top("embed/embedding", (V, D)),
        "transformer.wpe.weight": top("pos_embed", (P, D)),
    }
    top.check_all_read()
    stack = dict(params["decoder"])
    final = _Taker({"ln_final": stack.pop("ln_final", {})}, "decoder")
    out["transformer.ln_f.weight"] = final("ln_final/scale", (D,))
    out["transformer.ln_f.bias"] = final("ln_final/bias", (D,))
    final.check_all_read()
    layers = _layers(stack, L)
    extra = sorted(set(stack) - {"layers"} - {f"layers_{i}" for i in range(L)})
    if extra:
        raise ConversionError(f"decoder: parameters a GPT-2 has no place for: {extra}")
    for i, layer in enumerate(layers):
        take = _Taker(layer, f"decoder/layers_{i}")
        k = f"transformer.h.{i}."
        for ours, theirs in (("ln_attention", "ln_1"), ("ln_mlp", "ln_2")):
            out[k + theirs + ".weight"] = take(ours + "/scale", (D,))
            out[k + theirs + ".bias"] = take(ours + "/bias", (D,))
        q, key, v = (
            take(f"attention/{n}", (D, N, H)).reshape(D, D) for n in ("query", "key", "value")
        )
        out[k + "attn.c_attn.weight"] = np.concatenate([q, key, v], axis=1)
        out[k + "attn.c_attn.bias"] = np.concatenate(
            [
                take("attention/query_bias", (N, H)).reshape(D),
                np.zeros(D, np.float32),  # softmax-invariant: ours has none
                take("attention/value_bias", (N, H)).reshape(D),
            ]
        )
        out[k + "attn.c_proj.weight"] = take("attention/out", (N, H, D)).reshape(D, D)
        out[k + "attn.c_proj.bias"] = take("attention/out_bias", (D,))
        for ours, theirs, shape in (("wi", "c_fc", (D, F)), ("wo", "c_proj", (F, D))):
            out[k + f"mlp.{theirs}.weight"] = take(f"mlp/{ours}", shape)
            out[k + f"mlp.{theirs}.bias"] = take(f"mlp/{ours}_bias", shape[1:])
        take.check_all_read()
    os.makedirs(out_dir, exist_ok=True)
    save_file(
        {name: np.ascontiguousarray(x, np.float32) for name, x in out.items()},
        os.path.join(out_dir, "model.safetensors"),
        metadata={"format": "pt"},
    )
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(gpt2_config(cfg, ids), f, indent=2)
    left_out = sorted(set(params) - {"embed", "pos_embed", "decoder"})
    note = f"wrote {out_dir}: GPT-2, {L} layers x {D} wide, vocabulary {V}, {P} positions"
    if left_out:
        note += f"; left out (a GPT-2 has no encoders): {', '.join(left_out)}"
    return note


if __name__ == "__main__":  # the export command's old name: say where it went
    raise SystemExit(
        "the GPT-2 export command is now `python -m metalm_jax.export --workdir RUN --out DIR`"
    )
