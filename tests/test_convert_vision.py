"""CLIP vision tower and ViT -> our VisionEncoder: exact parity with transformers on tiny random
models, the bookkeeping of unused / dropped keys, and the errors for checkpoints that do not fit."""

import json
import os

import numpy as np
import pytest

from tests import _needs

torch, transformers = _needs.torch_and_transformers()  # or the whole file skips, naming which

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from metalm_jax import convert, testing  # noqa: E402
from metalm_jax.config import base_config  # noqa: E402
from metalm_jax.convert import vision as vision_convert  # noqa: E402
from metalm_jax.convert.common import ConversionError, fit_tree  # noqa: E402
from metalm_jax.model.build import model_config  # noqa: E402
from metalm_jax.model.vision import VisionEncoder  # noqa: E402

TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)
TOL = 1e-5  # max |ours - HF| / max |HF|


def _save(model, path):
    """Saves `model` with every parameter perturbed (so LayerNorm biases, attention biases and
    the key bias that we drop are all non-trivial)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random HF models saved as safetensors: name -> (directory, torch module whose
    forward(pixel_values) gives last_hidden_state)."""
    base = tmp_path_factory.mktemp("hf_vision")
    T = transformers
    out = {}
    torch.manual_seed(0)
    m = T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)).eval()
    out["clip_vision"] = (_save(m, base / "clip_vision"), m)
    torch.manual_seed(1)
    text = dict(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    cfg = T.CLIPConfig(text_config=text, vision_config=TINY, projection_dim=8)
    m = T.CLIPModel(cfg).eval()
    out["clip"] = (_save(m, base / "clip"), m.vision_model)
    torch.manual_seed(2)
    m = T.ViTModel(T.ViTConfig(**TINY)).eval()
    out["vit"] = (_save(m, base / "vit"), m)
    torch.manual_seed(3)
    m = T.ViTForImageClassification(T.ViTConfig(**TINY, qkv_bias=False, num_labels=5)).eval()
    out["vit_classifier_no_qkv_bias"] = (_save(m, base / "vit_cls"), m.vit)
    return out


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _encoder(fmt, path, **overrides):
    """(our VisionEncoder for the checkpoint's arch, its abstract params, the config)."""
    cfg = base_config()
    convert.apply_arch(cfg, fmt, path)
    for key, value in overrides.items():
        cfg.model.vision[key] = value
    enc = VisionEncoder(model_config(cfg).vision)
    images = _images(1)
    valid = np.ones((1,), np.int32)
    shapes = jax.eval_shape(lambda: enc.init(jax.random.key(0), images, valid))
    return enc, nn.unbox(shapes["params"]), cfg


def _parity(fmt, path, hf_module):
    conv = convert.load_hf(fmt, path)
    enc, abstract, cfg = _encoder(fmt, path)
    convert.check_arch(cfg, conv)
    params = fit_tree(
        conv.params["vision_encoder"], abstract, "vision_encoder", conv.sources["vision_encoder"]
    )
    images = _images()
    ours = np.asarray(enc.apply({"params": params}, images, np.ones((len(images),), np.int32)))
    with torch.no_grad():
        ref = hf_module(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
    ref = ref.last_hidden_state.numpy()
    assert ours.shape == ref.shape == (3, 1 + 16, TINY["hidden_size"])
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"{fmt} {os.path.basename(path)}: max relative error {err:.2e}")
    assert err <= TOL
    return conv


def test_clip_vision_model_parity(models):
    path, hf = models["clip_vision"]
    conv = _parity("hf_clip_vision", path, hf)
    a = conv.arch
    assert a["model.vision.activation"] == "quick_gelu"
    assert a["model.vision.embed_norm"] is True and a["model.vision.final_norm"] is False
    assert a["model.vision.text_prefix"] == 0 and a["model.vision.class_token"] is True
    assert conv.unused == ["post_layernorm.bias", "post_layernorm.weight"]
    assert all(k.endswith("k_proj.bias") for k in conv.dropped)
    assert len(conv.dropped) == TINY["num_hidden_layers"]
    assert conv.sources["vision_encoder"]["patch_bias"].startswith("zeros")
    assert np.all(conv.params["vision_encoder"]["patch_bias"] == 0)


def test_full_clip_model_parity_text_tower_unused(models):
    path, hf = models["clip"]
    conv = _parity("hf_clip_vision", path, hf)
    assert any(k.startswith("text_model.") for k in conv.unused)
    vision_unused = [k for k in conv.unused if k.startswith("vision_model.")]
    assert vision_unused == [
        "vision_model.post_layernorm.bias",
        "vision_model.post_layernorm.weight",
    ]
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= set(conv.unused)
    assert not any(k.startswith("text_model.") for k in conv.dropped)


def test_vit_parity(models):
    path, hf = models["vit"]
    conv = _parity("hf_vit", path, hf)
    a = conv.arch
    assert a["model.vision.activation"] == "gelu_exact"
    assert a["model.vision.ln_eps"] == 1e-12
    assert a["model.vision.embed_norm"] is False and a["model.vision.final_norm"] is True
    assert conv.unused == ["pooler.dense.bias", "pooler.dense.weight"]
    assert all(k.endswith("attention.attention.key.bias") for k in conv.dropped)
    assert conv.sources["vision_encoder"]["stack/ln_final/scale"] == "layernorm.weight"


def test_vit_classifier_without_qkv_bias_parity(models):
    path, hf = models["vit_classifier_no_qkv_bias"]
    conv = _parity("hf_vit", path, hf)
    assert conv.unused == ["classifier.bias", "classifier.weight"]
    assert conv.dropped == {}
    layer = conv.params["vision_encoder"]["stack"]["layers_0"]["attention"]
    assert np.all(layer["query_bias"] == 0) and np.all(layer["value_bias"] == 0)


def test_fit_into_another_width_names_keys_and_shapes(models):
    path, _ = models["clip_vision"]
    conv = convert.load_hf("hf_clip_vision", path)
    _, abstract, _ = _encoder("hf_clip_vision", path, d_model=64)
    with pytest.raises(ConversionError) as e:
        fit_tree(
            conv.params["vision_encoder"],
            abstract,
            "vision_encoder",
            conv.sources["vision_encoder"],
        )
    msg = str(e.value)
    assert "vision_encoder/patch_embed <- embeddings.patch_embedding.weight" in msg
    assert "source shape (192, 32), target shape (192, 64)" in msg


def test_wrong_tensor_shape_names_keys_and_shapes(models, tmp_path):
    path, _ = models["vit"]
    bad = testing.rewrite_checkpoint(
        path,
        tmp_path / "fc1",
        "encoder.layer.1.intermediate.dense.weight",
        np.zeros((48, 32), np.float32),
    )
    conv = convert.load_hf("hf_vit", bad)
    _, abstract, _ = _encoder("hf_vit", bad)
    with pytest.raises(ConversionError) as e:
        fit_tree(
            conv.params["vision_encoder"],
            abstract,
            "vision_encoder",
            conv.sources["vision_encoder"],
        )
    msg = str(e.value)
    assert "stack/layers_1/mlp/wi <- encoder.layer.1.intermediate.dense.weight" in msg
    assert "source shape (32, 48), target shape (32, 64)" in msg

    bad = testing.rewrite_checkpoint(
        path, tmp_path / "pos", "embeddings.position_embeddings", np.zeros((1, 10, 32), np.float32)
    )
    with pytest.raises(ConversionError, match=r"embeddings\.position_embeddings.*\(1, 10, 32\)"):
        convert.load_hf("hf_vit", bad)


def test_unsupported_configs():
    vit = dict(model_type="vit", **TINY)
    with pytest.raises(ConversionError, match="num_channels=1"):
        vision_convert.arch(dict(vit, num_channels=1), "x", clip=False)
    with pytest.raises(ConversionError, match="model_type 'deit'"):
        vision_convert.arch(dict(vit, model_type="deit"), "x", clip=False)
    with pytest.raises(ConversionError, match="model_type 'vit' is not CLIP"):
        vision_convert.arch(vit, "x", clip=True)
    with pytest.raises(ConversionError, match=r"image_size=\[32, 48\]; only square"):
        vision_convert.arch(dict(vit, image_size=[32, 48]), "x", clip=False)
    with pytest.raises(ConversionError, match="hidden activation 'tanh'"):
        vision_convert.arch(dict(vit, hidden_act="tanh"), "x", clip=False)
    # a full CLIPModel config: the vision tower's keys, transformers' defaults for missing ones
    a = vision_convert.arch(
        {"model_type": "clip", "vision_config": {"hidden_size": 32, "patch_size": 16}},
        "x",
        clip=True,
    )
    assert (a["d_model"], a["patch_size"], a["image_size"], a["num_layers"]) == (32, 16, 224, 12)


def test_pixel_normalization_comes_with_the_checkpoint(models, tmp_path):
    import shutil

    path, _ = models["vit"]
    assert convert.arch_of("hf_vit", path)["images.mean"] == (0.5, 0.5, 0.5)  # ViT's default
    assert convert.arch_of("hf_clip_vision", models["clip"][0])["images.std"][0] == 0.26862954
    with_pre = tmp_path / "vit_pre"
    shutil.copytree(path, with_pre)
    pre = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (with_pre / "preprocessor_config.json").write_text(json.dumps(pre))
    arch = convert.arch_of("hf_vit", str(with_pre))
    assert arch["images.mean"] == (0.485, 0.456, 0.406)
    assert arch["images.std"] == (0.229, 0.224, 0.225)
    cfg = base_config()  # CLIP normalization by default: a ViT run must take its own
    convert.apply_arch(cfg, "hf_vit", str(with_pre))
    convert.check_arch(cfg, convert.load_hf("hf_vit", str(with_pre)))
    cfg.images.mean = (0.5, 0.5, 0.5)
    with pytest.raises(ConversionError, match=r"images.mean: config \(0.5, 0.5, 0.5\)"):
        convert.check_arch(cfg, convert.load_hf("hf_vit", str(with_pre)))
