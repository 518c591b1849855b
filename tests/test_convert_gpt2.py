"""GPT-2 <-> our decoder: exact logit parity with transformers on tiny random models in both
directions, the round trip, the bookkeeping of dropped / unused keys, and the errors."""

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
from metalm_jax.convert import gpt2  # noqa: E402
from metalm_jax.convert.common import ConversionError, fit_tree  # noqa: E402
from metalm_jax.model.build import abstract_params, dummy_batch, model_config  # noqa: E402
from metalm_jax.model.metalm import MetaLM  # noqa: E402

TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=64)
SEQ = 16
TOL = 1e-5  # max |ours - HF| / max |HF|


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny random GPT2LMHeadModel saved as safetensors: (directory, model, its body's dir)."""
    base = tmp_path_factory.mktemp("hf_gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**TINY, bos_token_id=1, eos_token_id=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 initialises biases to 0 and LayerNorms to 1: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(base / "lm", safe_serialization=True)
    model.transformer.save_pretrained(base / "body", safe_serialization=True)
    return str(base / "lm"), model, str(base / "body")


def _tokens(vocab, n=2, length=SEQ, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, length)).astype(np.int32)


def _batch(tokens):
    B, L = tokens.shape
    return dummy_batch(B, L, 1).replace(
        tokens=tokens,
        segment_ids=np.ones((B, L), np.int32),
        positions=np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy(),
    )


def _model(cfg):
    model = MetaLM(model_config(cfg))
    return model, nn.unbox(abstract_params(model))


def _imported_cfg(path, **decoder):
    cfg = base_config()
    cfg.model.text_encoder.enabled = False
    convert.apply_arch(cfg, "hf_gpt2", path)
    cfg.data.seq_len = SEQ
    cfg.model.decoder.update(decoder)
    return cfg


def _fit(conv, abstract):
    assert set(conv.params) == set(abstract) == {"embed", "pos_embed", "decoder"}
    return {k: fit_tree(conv.params[k], abstract[k], k, conv.sources[k]) for k in abstract}


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


def _rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("scan", [False, True])
def test_import_parity(hf, scan):
    path, hf_model, _ = hf
    conv = convert.load_hf("hf_gpt2", path)
    cfg = _imported_cfg(path, scan=scan)
    convert.check_arch(cfg, conv)
    model, abstract = _model(cfg)
    params = _fit(conv, abstract)
    tokens = _tokens(TINY["vocab_size"])
    ours, _ = model.apply({"params": params}, _batch(tokens))
    ref = _hf_logits(hf_model, tokens)
    assert ours.shape == ref.shape == (2, SEQ, TINY["vocab_size"])
    err = _rel_err(np.asarray(ours), ref)
    print(f"GPT-2 import (scan={scan}): max relative error {err:.2e}")
    assert err <= TOL
    a = conv.arch
    assert a["model.decoder.activation"] == "gelu" and a["model.decoder.d_ff"] == 4 * 32
    assert a["data.vocab_size"] == 97 and a["model.decoder.max_len"] == 64
    assert not any(k.startswith("model.text_encoder") for k in a)
    assert conv.unused == []
    assert sorted(conv.dropped) == [f"transformer.h.{i}.attn.c_attn.bias" for i in range(2)]
    assert all("softmax-invariant" in why for why in conv.dropped.values())
    assert conv.sources["pos_embed"] == {"": "transformer.wpe.weight"}
    assert conv.sources["decoder"]["layers_1/attention/value"] == (
        "transformer.h.1.attn.c_attn.weight[:, 64:96]"
    )


def test_body_without_prefix_and_tied_head(hf, tmp_path):
    """GPT2Model keys (no "transformer."), and an explicit lm_head.weight equal to wte."""
    path, hf_model, body = hf
    conv = convert.load_hf("hf_gpt2", body)
    cfg = _imported_cfg(body)
    model, abstract = _model(cfg)
    tokens = _tokens(TINY["vocab_size"], seed=1)
    ours, _ = model.apply({"params": _fit(conv, abstract)}, _batch(tokens))
    assert _rel_err(np.asarray(ours), _hf_logits(hf_model, tokens)) <= TOL
    assert conv.sources["embed"] == {"embedding": "wte.weight"}

    wte = hf_model.transformer.wte.weight.detach().numpy()
    tied = testing.rewrite_checkpoint(path, tmp_path / "tied", "lm_head.weight", wte.copy())
    conv = convert.load_hf("hf_gpt2", tied)
    assert "tied" in conv.dropped["lm_head.weight"] and conv.unused == []
    untied = testing.rewrite_checkpoint(path, tmp_path / "untied", "lm_head.weight", wte + 1.0)
    with pytest.raises(ConversionError, match=r"lm_head\.weight.*untied"):
        convert.load_hf("hf_gpt2", untied)


def _gpt2_shaped_cfg(scan=False):
    cfg = base_config()
    cfg.data.vocab_size = 97
    cfg.data.seq_len = SEQ
    cfg.model.text_encoder.enabled = False
    cfg.model.decoder.update(
        num_layers=2,
        d_model=32,
        num_heads=4,
        d_ff=48,
        max_len=24,
        norm="pre",
        positions="learned",
        activation="gelu",
        ln_eps=1e-5,
        embed_norm=False,
        embed_scale=False,
        final_norm=True,
        scan=scan,
    )
    return cfg


def _random_params(cfg, seed=0):
    """Our init, every leaf perturbed so biases and LayerNorm parameters are not 0 / 1."""
    model = MetaLM(model_config(cfg))
    batch = dummy_batch(1, SEQ, 8)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), batch)["params"])
    rng = np.random.default_rng(seed)
    perturb = lambda x: np.asarray(x) + 0.1 * rng.standard_normal(np.shape(x)).astype(np.float32)
    return model, jax.tree.map(perturb, params)


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
@pytest.mark.parametrize("scan", [False, True])
def test_export_parity_and_round_trip(tmp_path, scan):
    cfg = _gpt2_shaped_cfg(scan=scan)
    model, params = _random_params(cfg)
    out = str(tmp_path / "exported")
    # docked encoders are left out (only the top-level names matter to export)
    docked = {"text_encoder": {"w": np.zeros(3)}, "connector": {"w": np.zeros(3)}} if scan else {}
    note = gpt2.export({**params, **docked}, cfg, out)
    assert ("left out" in note) == scan
    if scan:
        assert note.endswith("left out (a GPT-2 has no encoders): connector, text_encoder")
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert config["n_inner"] == 48 and config["n_positions"] == 24

    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()
    tokens = _tokens(97, seed=2)
    ours, _ = model.apply({"params": params}, _batch(tokens))
    err = _rel_err(np.asarray(ours), _hf_logits(hf_model, tokens))
    print(f"GPT-2 export (scan={scan}): max relative error {err:.2e}")
    assert err <= TOL

    conv = convert.load_hf("hf_gpt2", out)
    assert conv.unused == []
    back = _imported_cfg(out, scan=scan)
    convert.check_arch(cfg, conv)
    _, abstract = _model(back)
    mine = {k: params[k] for k in ("embed", "pos_embed", "decoder")}
    jax.tree.map(np.testing.assert_array_equal, _fit(conv, abstract), mine)


def test_wrong_tensor_shape_names_keys_and_shapes(hf, tmp_path):
    path, _, _ = hf
    key = "transformer.h.1.mlp.c_fc.weight"
    bad = testing.rewrite_checkpoint(path, tmp_path / "fc", key, np.zeros((32, 48), np.float32))
    conv = convert.load_hf("hf_gpt2", bad)
    _, abstract = _model(_imported_cfg(bad))
    with pytest.raises(ConversionError) as e:
        _fit(conv, abstract)
    msg = str(e.value)
    assert f"decoder/layers_1/mlp/wi <- {key}" in msg
    assert "source shape (32, 48), target shape (32, 128)" in msg

    key = "transformer.h.0.attn.c_attn.weight"
    bad = testing.rewrite_checkpoint(path, tmp_path / "qkv", key, np.zeros((32, 64), np.float32))
    with pytest.raises(
        ConversionError, match=r"h\.0\.attn\.c_attn\.weight.*\(32, 64\).*\(32, 96\)"
    ):
        convert.load_hf("hf_gpt2", bad)


def test_fit_into_another_width_names_keys_and_shapes(hf):
    path, _, _ = hf
    conv = convert.load_hf("hf_gpt2", path)
    _, abstract = _model(_imported_cfg(path, d_model=64))
    for name, src, shapes in (
        ("embed/embedding", "transformer.wte.weight", "(97, 32), target shape (97, 64)"),
        ("pos_embed", "transformer.wpe.weight", "(64, 32), target shape (64, 64)"),
    ):
        top = name.split("/")[0]
        with pytest.raises(ConversionError) as e:
            fit_tree(conv.params[top], abstract[top], top, conv.sources[top])
        assert f"{name} <- {src}: source shape {shapes}" in str(e.value)


def test_export_refuses_a_decoder_gpt2_cannot_express(tmp_path):
    cfg = base_config()  # deepnorm, sinusoidal positions, sqrt(D) embedding scale
    with pytest.raises(ConversionError) as e:
        gpt2.export({}, cfg, str(tmp_path / "x"))
    msg = str(e.value)
    for part in (
        "model.decoder.norm='deepnorm' (GPT-2 needs 'pre')",
        "model.decoder.positions='sinusoidal' (GPT-2 needs 'learned')",
        "model.decoder.embed_scale=True (GPT-2 needs False)",
    ):
        assert part in msg
    cfg = _gpt2_shaped_cfg()
    cfg.model.decoder.activation = "tanh"
    with pytest.raises(ConversionError, match="model.decoder.activation='tanh'"):
        gpt2.export({}, cfg, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_unsupported_configs():
    base = dict(model_type="gpt2", **TINY)
    for key, value in (
        ("scale_attn_by_inverse_layer_idx", True),
        ("add_cross_attention", True),
        ("scale_attn_weights", False),
    ):
        with pytest.raises(ConversionError, match=f"{key}={value}"):
            gpt2.arch(dict(base, **{key: value}), "x")
    with pytest.raises(ConversionError, match="n_embd=32 is not divisible by n_head=5"):
        gpt2.arch(dict(base, n_head=5), "x")
    with pytest.raises(ConversionError, match="model_type 'gpt_neo'"):
        gpt2.arch(dict(base, model_type="gpt_neo"), "x")
    with pytest.raises(ConversionError, match="hidden activation 'tanh'"):
        gpt2.arch(dict(base, activation_function="tanh"), "x")
    a = gpt2.arch(dict(base, n_inner=40, activation_function="relu"), "x")
    assert a["d_ff"] == 40 and a["activation"] == "relu"


def test_cli_missing_run_is_a_clear_error(tmp_path):
    from metalm_jax.export import export_run

    with pytest.raises(FileNotFoundError, match="no such run directory"):
        export_run(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "nope")


def test_export_run_exports_the_loaded_run(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from metalm_jax.eval import load
    from metalm_jax.export import export_run

    cfg = _gpt2_shaped_cfg()
    _, params = _random_params(cfg)
    from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS

    tok = SimpleNamespace(source="run/tokenizer.model", kind="sentencepiece", ids=SENTENCEPIECE_IDS)
    calls = []

    def fake_load_run(workdir, step=None):
        calls.append((workdir, step))
        return cfg, tok, None, params

    monkeypatch.setattr(load, "load_run", fake_load_run)
    note = export_run(str(tmp_path), str(tmp_path / "out"), step=3)
    assert calls == [(str(tmp_path), 3)]
    assert "run/tokenizer.model" in note
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


def test_export_run_copies_a_json_tokenizer(tmp_path, monkeypatch):
    """A run with a Hugging Face tokenizer.json (GPT-2's own): the export gets it, and its ids
    (pad and </d> mapped onto <|endoftext|>) in config.json."""
    from metalm_jax.data.corpora.text import kjv_chapters
    from metalm_jax.data.tokenizer import open_tokenizer
    from metalm_jax.eval import load
    from metalm_jax.export import export_run

    texts = [v for _, verses in kjv_chapters()[:5] for v in verses]
    tok = open_tokenizer(testing.write_byte_bpe(str(tmp_path / "tokenizer.json"), texts, 300))
    cfg = _gpt2_shaped_cfg()
    cfg.data.vocab_size = tok.vocab_size
    _, params = _random_params(cfg)
    monkeypatch.setattr(load, "load_run", lambda workdir, step=None: (cfg, tok, None, params))
    note = export_run(str(tmp_path), str(tmp_path / "out"))
    assert note.endswith(f"tokenizer: the run's {tok.source}, copied as tokenizer.json")
    with open(tmp_path / "out" / "config.json") as f:
        config = json.load(f)
    assert config["bos_token_id"] == config["eos_token_id"] == config["pad_token_id"] == 299
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "out" / "tokenizer.json")
    )
    assert hf_tok.encode("In the beginning") == tok.encode("In the beginning")
