"""Vision towers: CLIP's (CLIPModel / CLIPVisionModel) and ViT (ViTModel, ViTFor...) -> our
VisionEncoder (vision-only: class token first, no text prefix).

Architecture mapping (exact, verified against transformers in tests/test_convert_vision.py):
  patch embedding conv [D, C, p, p] (stride p)       : patch_embed [p*p*C, D] in our patch
      order (row, column, channel); CLIP's conv has no bias (patch_bias zeros), ViT's has one
  class_embedding [D] (CLIP) / cls_token [1, 1, D]  : cls [1, D]
  position table (class token first)                 : pos_embed [1 + P, D]
  CLIP pre_layrnorm (after the positions)            : embed_norm (embed_norm=True)
  pre-LN layers                                       : norm="pre"
      CLIP layer_norm1 / ViT layernorm_before        : ln_attention
      q / k / v / out projections                    : attention query / key / value / out
          the key bias is dropped: it adds q.b_k to every logit of a query, which softmax
          ignores; ViT with qkv_bias=False gets zero query / value biases
      CLIP layer_norm2 / ViT layernorm_after         : ln_mlp
      fc1 / fc2 (CLIP), intermediate / output.dense  : mlp wi / wo
  CLIP quick_gelu, ViT exact GELU; layer_norm_eps    : activation, ln_eps
  ViT's final layernorm                               : stack/ln_final (final_norm=True)
  CLIP: last_hidden_state has no final norm           : final_norm=False
  not used (reported): CLIP post_layernorm and visual_projection (pooled output only), CLIP's
  text tower, logit_scale; ViT pooler and classifier
"""

from __future__ import annotations

import numpy as np

from metalm_jax.convert.common import ConversionError, HFCheckpoint, TreeBuilder, activation
from metalm_jax.data.images import CLIP_MEAN, CLIP_STD

# CLIPModel and transformers 4.x CLIPVisionModel files: "vision_model."; 5.x CLIPVisionModel: ""
CLIP_PREFIXES = ("vision_model.", "")
VIT_PREFIXES = ("", "vit.")  # ViTModel; ViTForImageClassification / ViTForMaskedImageModeling

# transformers' config defaults (older config.json files leave out keys equal to these)
CLIP_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
VIT_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=16,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    qkv_bias=True,
)


def vision_config(config: dict, where: str, clip: bool) -> dict:
    """The vision tower's settings (transformers' defaults filled in) from a config.json."""
    kind = config.get("model_type", "")
    if clip:
        if kind == "clip" or (not kind and "vision_config" in config):
            sub = config.get("vision_config") or {}
            where = f"{where} vision_config"
        elif kind == "clip_vision_model":
            sub = config
        else:
            raise ConversionError(
                f"{where}: model_type {kind!r} is not CLIP (need 'clip' with a vision_config, "
                "or 'clip_vision_model')"
            )
        defaults = CLIP_DEFAULTS
    else:
        if kind != "vit":
            raise ConversionError(f"{where}: model_type {kind!r} is not a ViT ('vit')")
        sub, defaults = config, VIT_DEFAULTS
    out = {k: sub.get(k, v) for k, v in defaults.items()}
    if out["num_channels"] != 3:
        raise ConversionError(
            f"{where}: num_channels={out['num_channels']}; our encoder reads RGB images (3)"
        )
    for key in ("image_size", "patch_size"):
        if not isinstance(out[key], int):  # [h, w] pairs: only square images / patches
            raise ConversionError(f"{where}: {key}={out[key]!r}; only square sizes convert")
    if out["image_size"] % out["patch_size"]:
        raise ConversionError(
            f"{where}: image_size={out['image_size']} is not a multiple of "
            f"patch_size={out['patch_size']}"
        )
    return out


# the processors' pixel normalization when no preprocessor_config.json comes with the weights
CLIP_PIXELS = (CLIP_MEAN, CLIP_STD)
VIT_PIXELS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def arch(config: dict, where: str, clip: bool, preprocessor: dict | None = None) -> dict:
    """Our model.vision config keys for a CLIP (vision tower) or ViT config.json, plus the pixel
    normalization (images.mean / images.std) from its preprocessor_config.json or the family's
    default."""
    c = vision_config(config, where, clip)
    mean, std = CLIP_PIXELS if clip else VIT_PIXELS
    pre = preprocessor or {}
    mean = tuple(float(x) for x in pre.get("image_mean", mean))
    std = tuple(float(x) for x in pre.get("image_std", std))
    return {
        "images.mean": mean,
        "images.std": std,
        **_tower(c, clip, where),
    }


def _tower(c: dict, clip: bool, where: str) -> dict:
    return dict(
        enabled=True,
        size="",
        num_layers=c["num_hidden_layers"],
        d_model=c["hidden_size"],
        num_heads=c["num_attention_heads"],
        d_ff=c["intermediate_size"],
        patch_size=c["patch_size"],
        image_size=c["image_size"],
        class_token=True,
        text_prefix=0,
        experts=False,
        norm="pre",
        activation=activation(c["hidden_act"], where),
        ln_eps=float(c["layer_norm_eps"]),
        embed_norm=clip,  # CLIP's pre_layrnorm
        final_norm=not clip,  # ViT's final layernorm; CLIP's post_layernorm is pooled-only
    )


def _embeddings(ckpt: HFCheckpoint, out: TreeBuilder, a: dict, p: str, clip: bool) -> None:
    D, patch = a["d_model"], a["patch_size"]
    n = 1 + (a["image_size"] // patch) ** 2  # class token + patches
    e = p + "embeddings."
    conv = e + ("patch_embedding" if clip else "patch_embeddings.projection")
    w = ckpt.get(conv + ".weight", (D, 3, patch, patch))
    # [D, C, kh, kw] -> [kh, kw, C, D]: rows of our kernel follow patchify's (row, col, channel)
    out.put("patch_embed", w.transpose(2, 3, 1, 0).reshape(patch * patch * 3, D), conv + ".weight")
    if clip:
        out.put("patch_bias", np.zeros(D, np.float32), "zeros (CLIP's patch conv has no bias)")
        key = e + "class_embedding"
        out.put("cls", ckpt.get(key, (D,))[None], key)
        key = e + "position_embedding.weight"
        out.put("pos_embed", ckpt.get(key, (n, D)), key)
        out.norm("embed_norm", p + "pre_layrnorm")
    else:
        out.put("patch_bias", ckpt.get(conv + ".bias", (D,)), conv + ".bias")
        key = e + "cls_token"
        out.put("cls", ckpt.get(key, (1, 1, D))[0], key)
        key = e + "position_embeddings"
        out.put("pos_embed", ckpt.get(key, (1, n, D))[0], key)


def _clip_layer(ckpt, out, k: str, t: str, a: dict, qkv_bias: bool) -> None:
    heads = a["num_heads"]
    out.norm(t + "ln_attention", k + "layer_norm1")
    out.linear_in(t + "attention/query", k + "self_attn.q_proj", heads)
    out.linear_in(t + "attention/key", k + "self_attn.k_proj", heads, bias=False)
    ckpt.drop(k + "self_attn.k_proj.bias", "softmax-invariant (exact)")
    out.linear_in(t + "attention/value", k + "self_attn.v_proj", heads)
    out.linear_out(t + "attention/out", k + "self_attn.out_proj", heads)
    out.norm(t + "ln_mlp", k + "layer_norm2")
    out.linear_in(t + "mlp/wi", k + "mlp.fc1")
    out.linear_in(t + "mlp/wo", k + "mlp.fc2")


def _vit_layer(ckpt, out, k: str, t: str, a: dict, qkv_bias: bool) -> None:
    heads = a["num_heads"]
    s = k + "attention.attention."
    out.norm(t + "ln_attention", k + "layernorm_before")
    for name in ("query", "value"):
        out.linear_in(t + "attention/" + name, s + name, heads, bias=qkv_bias)
        if not qkv_bias:
            zeros = np.zeros((heads, a["d_model"] // heads), np.float32)
            out.put(t + f"attention/{name}_bias", zeros, "zeros (qkv_bias=False)")
    out.linear_in(t + "attention/key", s + "key", heads, bias=False)
    ckpt.drop(s + "key.bias", "softmax-invariant (exact)")
    out.linear_out(t + "attention/out", k + "attention.output.dense", heads)
    out.norm(t + "ln_mlp", k + "layernorm_after")
    out.linear_in(t + "mlp/wi", k + "intermediate.dense")
    out.linear_in(t + "mlp/wo", k + "output.dense")


def convert(ckpt: HFCheckpoint, clip: bool) -> tuple[dict, dict]:
    """(our model.vision config keys, {"vision_encoder": the converted parameters})."""
    a = arch(ckpt.config, ckpt.path, clip, ckpt.preprocessor)
    qkv_bias = clip or bool(vision_config(ckpt.config, ckpt.path, clip)["qkv_bias"])
    if clip:
        p = ckpt.prefix("embeddings.class_embedding", CLIP_PREFIXES)
        layer, layer_key = _clip_layer, p + "encoder.layers.{}."
    else:
        p = ckpt.prefix("embeddings.cls_token", VIT_PREFIXES)
        layer, layer_key = _vit_layer, p + "encoder.layer.{}."
    out = TreeBuilder(ckpt)
    _embeddings(ckpt, out, a, p, clip)
    for i in range(a["num_layers"]):
        k = layer_key.format(i)
        try:
            layer(ckpt, out, k, f"stack/layers_{i}/", a, qkv_bias)
        except ConversionError:
            raise
        except ValueError as e:  # a projection whose width does not split into the heads
            raise ConversionError(
                f"{ckpt.path}: {k}*: {e} (num_attention_heads={a['num_heads']})"
            ) from e
    if not clip:
        out.norm("stack/ln_final", p + "layernorm")
    return a, {"vision_encoder": out}
