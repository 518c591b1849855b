"""BERT-family encoders -> our TextEncoder (exact parity with transformers), the real MiniLM on
real sentences, conversion errors, re-tokenized spans, and `init` (converted or Orbax) in a run."""

import json
import os

import numpy as np
import pytest

from metalm_jax import convert
from metalm_jax.config import base_config
from metalm_jax.convert.common import ConversionError, fit_tree
from metalm_jax.data.spans import RetokenizedEncoding, SpanConfig, build_example
from metalm_jax.model.build import model_config
from tests import _needs

TOL = 1e-5  # max |ours - HF| / max |HF|
# (torch, transformers), or the test skips naming the package: every use of the convert extra
# goes through here, so a run without it skips instead of failing
_hf = _needs.torch_and_transformers


def _minilm_dir():
    _needs.minilm()
    return convert.resolve_path("minilm")


def _save_tiny(model, path):
    """save_pretrained with every parameter perturbed (LayerNorms, biases, the dropped key bias
    all non-trivial)."""
    torch, _ = _hf()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()


def _encoder(path, fmt="hf_bert"):
    """(TextEncoder, fitted params) built through the config path a run uses."""
    import flax.linen as nn
    import jax

    from metalm_jax.model.metalm import TextEncoder

    cfg = base_config()
    cfg.spans.max_len = 8
    convert.apply_arch(cfg, fmt, path)
    cfg.data.vocab_size = cfg.model.text_encoder.vocab_size  # one shared vocabulary here
    mc = model_config(cfg)
    enc = TextEncoder(mc.text_encoder, mc.encoder_vocab_size)
    conv = convert.load_hf(fmt, path)
    convert.check_arch(cfg, conv)
    ids = np.zeros((1, 4), np.int32)
    abstract = nn.unbox(jax.eval_shape(lambda: enc.init(jax.random.key(0), ids, ids, ids)))
    params = fit_tree(
        conv.params["text_encoder"],
        abstract["params"],
        "text_encoder",
        conv.sources["text_encoder"],
    )
    return enc, params, conv


def _rows(lengths, vocab, lo=5, seed=0):
    rng = np.random.default_rng(seed)
    L = max(lengths)
    ids = np.zeros((len(lengths), L), np.int32)
    seg = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(lo, vocab, n)
        seg[i, :n] = 1
    pos = np.where(seg > 0, np.arange(L)[None], 0).astype(np.int32)
    return ids, seg, pos


def _compare(enc, params, hf, ids, seg, pos, pad_id=0):
    torch, _ = _hf()
    ours = np.asarray(enc.apply({"params": params}, ids, seg, pos))
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(np.where(seg > 0, ids, pad_id), dtype=torch.long),
            attention_mask=torch.tensor(seg > 0, dtype=torch.long),
        ).last_hidden_state.numpy()
    m = seg > 0
    return float(np.abs(ours[m] - ref[m]).max() / np.abs(ref[m]).max())


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_bert_family_parity(kind, tmp_path):
    _, tf = _hf()

    common = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        type_vocab_size=2,
    )
    if kind == "bert":
        hf = tf.BertModel(tf.BertConfig(max_position_embeddings=40, **common))
    elif kind == "roberta":  # positions numbered from padding_idx + 1
        hf = tf.RobertaModel(tf.RobertaConfig(max_position_embeddings=42, pad_token_id=1, **common))
    else:  # ELECTRA: 16-wide embeddings projected to 32
        hf = tf.ElectraModel(
            tf.ElectraConfig(max_position_embeddings=40, embedding_size=16, **common)
        )
    hf = _save_tiny(hf, tmp_path)
    enc, params, conv = _encoder(str(tmp_path))
    assert conv.arch["model.text_encoder.max_len"] == 40
    assert conv.unused == [] or all(k.startswith("pooler.") for k in conv.unused)
    assert sorted(conv.dropped) == [
        f"encoder.layer.{i}.attention.self.key.bias" for i in range(2)
    ]  # dropped on purpose, and it is non-zero: parity shows softmax ignores it
    ids, seg, pos = _rows([11, 7, 1], 99)
    err = _compare(enc, params, hf, ids, seg, pos, pad_id=1 if kind == "roberta" else 0)
    assert err <= TOL, err


def test_real_minilm_matches_transformers_on_sentences():
    torch, tf = _hf()
    from tokenizers import Tokenizer

    path = _minilm_dir()
    enc, params, conv = _encoder(path)
    assert conv.unused == ["pooler.dense.bias", "pooler.dense.weight"]
    tk = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    sents = [
        "In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void; and darkness was upon the face of the deep.",
        "Jesus wept.",
    ]
    encs = [tk.encode(s).ids for s in sents]
    L = max(map(len, encs))
    ids, seg = np.zeros((3, L), np.int32), np.zeros((3, L), np.int32)
    for i, e in enumerate(encs):
        ids[i, : len(e)], seg[i, : len(e)] = e, 1
    pos = np.where(seg > 0, np.arange(L)[None], 0).astype(np.int32)
    hf = tf.BertModel.from_pretrained(path).eval()
    torch.manual_seed(0)
    assert _compare(enc, params, hf, ids, seg, pos) <= TOL


def _small_bert(path):
    _, tf = _hf()

    cfg = tf.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=20,
    )
    tf.BertModel(cfg).save_pretrained(path, safe_serialization=True)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    _small_bert(tmp_path)
    # a config.json that lies about the intermediate size
    cfg_path = tmp_path / "config.json"
    data = json.loads(cfg_path.read_text())
    data["intermediate_size"] = 48
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(ConversionError) as e:
        _encoder(str(tmp_path))
    msg = str(e.value)
    assert "text_encoder/stack/layers_0/mlp/wi <- encoder.layer.0.intermediate.dense.weight" in msg
    assert "(16, 32)" in msg and "(16, 48)" in msg


def test_config_not_matching_checkpoint_names_keys(tmp_path):
    _small_bert(tmp_path)
    cfg = base_config()
    convert.apply_arch(cfg, "hf_bert", str(tmp_path))
    cfg.model.text_encoder.activation = "gelu"  # tanh approximation: not what BERT computes
    cfg.model.text_encoder.ln_eps = 1e-5
    with pytest.raises(
        ConversionError, match=r"activation: config 'gelu', checkpoint 'gelu_exact'"
    ):
        convert.check_arch(cfg, convert.load_hf("hf_bert", str(tmp_path)))
    with pytest.raises(ConversionError, match="ln_eps"):
        convert.check_arch(cfg, convert.load_hf("hf_bert", str(tmp_path)))
    with pytest.raises(ConversionError, match="format 'hf_t5'"):
        convert.load_hf("hf_t5", str(tmp_path))
    with pytest.raises(ConversionError, match="no such file"):
        convert.load_hf("hf_bert", str(tmp_path / "missing"))


# -- re-tokenized spans ---------------------------------------------------------------------


class _WordDecoder:
    """Stands in for the SentencePiece tokenizer: id i decodes to word i."""

    eos = 2  # </s>, where a span's text is split into paragraphs

    def __init__(self, words):
        self.words = words

    def decode(self, ids):
        return " ".join(self.words[int(i)] for i in ids)


def _save_wordpiece(path, vocab):
    """A BERT-style WordPiece tokenizer.json over `vocab` (its first 4: PAD UNK CLS SEP)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.add_special_tokens(vocab[:4])
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    tk.save(path)
    return path


def _wordpiece(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "let", "there", "be", "light", "##s", "and"]
    return _save_wordpiece(str(tmp_path / "tokenizer.json"), vocab)


def test_retokenized_span_takes_one_slot_per_encoder_vector(tmp_path):
    # decoder "SentencePiece" ids: 0 pad, 1 <s>, 2 </s>, 3 unk, 4 </d>, then words
    words = ["<pad>", "<s>", "</s>", "<unk>", "</d>", "Let", "there", "be", "lights", "and"]
    enc = RetokenizedEncoding(_wordpiece(tmp_path), _WordDecoder(words), max_len=16)
    # <s> Let there be lights </s> and light... : span [2, 7) = there be lights </s> and
    tokens = np.array([1, 5, 6, 7, 8, 2, 9, 5, 6, 4], np.int32)
    row = {
        "tokens": tokens,
        "segment_ids": np.ones(10, np.int32),
        "positions": np.arange(10, dtype=np.int32),
    }
    ex = build_example(row, [(2, 7)], SpanConfig(1, 8, 0.25, 12), enc)
    # WordPiece: [CLS] there be light ##s [SEP] and [SEP] -> 8 vectors, 8 slots for 5 tokens
    np.testing.assert_array_equal(ex["enc_tokens"], [2, 5, 6, 7, 8, 3, 9, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(ex["enc_segment_ids"], [1] * 8 + [0] * 4)
    np.testing.assert_array_equal(ex["enc_positions"], list(range(8)) + [0] * 4)
    # decoder: <s> Let [8 slots] Let be -- the row (10) is cut: 2 + 8 = 10
    np.testing.assert_array_equal(ex["slot_index"], [-1, -1, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ex["loss_weights"], [1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    assert ex["targets"][1] == 6  # the position before the span predicts its first token
    assert ex["targets"][9] == 5  # the last slot predicts the token after the span (Let)
    np.testing.assert_array_equal(ex["positions"], np.arange(10))


def test_retokenized_span_that_does_not_fit_stays_text(tmp_path):
    words = ["<pad>", "<s>", "</s>", "<unk>", "</d>", "Let", "there", "be", "lights", "and"]
    enc = RetokenizedEncoding(_wordpiece(tmp_path), _WordDecoder(words), max_len=16)
    tokens = np.array([1, 5, 6, 7, 5, 6, 7, 5, 6, 4, 0, 0], np.int32)
    seg = np.array([1] * 10 + [0, 0], np.int32)
    row = {"tokens": tokens, "segment_ids": seg, "positions": np.arange(12, dtype=np.int32)}
    # span [1, 3) -> [CLS] let there [SEP] = 4 vectors for 2 tokens: the row grows by 2 into its
    # padding; span [5, 8) would need 5 more encoder positions than the grid of 6 has: text
    ex = build_example(row, [(1, 3), (5, 8)], SpanConfig(1, 4, 0.25, 6), enc)
    np.testing.assert_array_equal(ex["enc_tokens"], [2, 4, 5, 3, 0, 0])
    np.testing.assert_array_equal(ex["slot_index"], [-1, 0, 1, 2, 3] + [-1] * 7)
    np.testing.assert_array_equal(ex["tokens"][5:], [7, 5, 6, 7, 5, 6, 4])
    np.testing.assert_array_equal(ex["segment_ids"], [1] * 12)
    assert ex["loss_weights"][-1] == 0  # </d> predicts nothing


def test_bad_tokenizer_file_is_named(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        RetokenizedEncoding(str(bad), _WordDecoder([]), 8)


# -- init in a run ----------------------------------------------------------------------------


def _char_wordpiece(path):
    """A 64-piece character-level WordPiece tokenizer.json (for a tiny random BERT)."""
    import string

    letters = list(string.ascii_lowercase)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *letters, *("##" + c for c in letters)]
    vocab += list(".,;:!?'-")
    assert len(vocab) == 64
    _save_wordpiece(path, vocab)


def _micro_with_bert(corpus, tmp_path):
    """A micro run whose text encoder is a tiny random BERT (converted at init)."""
    torch, tf = _hf()
    torch.manual_seed(0)  # the same BERT on every call
    bert_dir = tmp_path / "bert"
    _save_tiny(
        tf.BertModel(
            tf.BertConfig(
                vocab_size=64,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=32,
            )
        ),
        bert_dir,
    )
    _char_wordpiece(str(bert_dir / "tokenizer.json"))
    cfg, tok = corpus
    cfg = cfg.copy_and_resolve_references()
    cfg.model.text_encoder.tokenizer = str(bert_dir)  # spans re-tokenized with its 64 pieces
    cfg.spans.enc_length = 96
    cfg.data.tokenizer_path = tok.source
    cfg.train.eval_every, cfg.train.sample_tokens = 0, 0
    convert.apply_arch(cfg, "hf_bert", str(bert_dir))
    cfg.init = [dict(format="hf_bert", source=str(bert_dir))]
    return cfg, str(bert_dir)


@pytest.mark.slow
def test_init_from_hf_and_from_orbax(corpus, tmp_path, capsys):
    import jax

    from metalm_jax.eval.load import load_run
    from metalm_jax.loop import train_and_evaluate

    cfg, bert_dir = _micro_with_bert(corpus, tmp_path)
    cfg.train.steps = 1
    cfg.optim.frozen = [r"^text_encoder/"]  # stays exactly as converted
    train_and_evaluate(cfg, str(tmp_path / "run1"))
    out = capsys.readouterr().out
    assert f"init[0] text_encoder <- hf_bert {bert_dir}" in out
    assert "dropped 2 source key(s), softmax-invariant (exact)" in out
    assert "freshly initialised: connector, decoder, embed" in out
    _, _, _, params = load_run(str(tmp_path / "run1"))
    want = convert.load_hf("hf_bert", bert_dir).params["text_encoder"]
    got = jax.tree.map(np.asarray, params["text_encoder"])
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)

    # an Orbax source whose saved config describes another architecture is refused
    from metalm_jax.training.init_from import _OrbaxSources

    other = cfg.copy_and_resolve_references()
    other.model.text_encoder.activation = "relu"
    entry = {"format": "orbax", "source": str(tmp_path / "run1"), "target": "text_encoder"}
    with _OrbaxSources() as orbax:
        with pytest.raises(ConversionError, match="text_encoder.activation: source 'gelu_exact'"):
            orbax.want(other, 0, entry)

    # a second run: a GPT-2 decoder converted from transformers, the first run's connector from
    # its Orbax checkpoint, the BERT again
    _, tf = _hf()

    gpt2_dir = tmp_path / "gpt2"
    _save_tiny(
        tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=cfg.data.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2
            )
        ),
        gpt2_dir,
    )
    cfg2, _ = _micro_with_bert(corpus, tmp_path)
    convert.apply_arch(cfg2, "hf_gpt2", str(gpt2_dir))
    cfg2.train.steps = 1
    cfg2.optim.frozen = [r"^(embed|pos_embed|decoder|connector)(/|$)"]
    cfg2.init = [
        dict(format="hf_gpt2", source=str(gpt2_dir)),
        dict(format="orbax", source=str(tmp_path / "run1"), target="connector"),
        dict(format="hf_bert", source=bert_dir),
    ]
    train_and_evaluate(cfg2, str(tmp_path / "run2"))
    out = capsys.readouterr().out
    assert f"init[0] embed, pos_embed, decoder <- hf_gpt2 {gpt2_dir}" in out
    assert "init[1] connector <- orbax" in out
    assert "freshly initialised: nothing" in out
    _, _, _, params2 = load_run(str(tmp_path / "run2"))
    for a, b in zip(
        jax.tree.leaves(params["connector"]), jax.tree.leaves(params2["connector"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    gpt2 = convert.load_hf("hf_gpt2", str(gpt2_dir)).params
    np.testing.assert_array_equal(gpt2["pos_embed"], np.asarray(params2["pos_embed"]))
    want = jax.tree.leaves(gpt2["decoder"])
    for a, b in zip(want, jax.tree.leaves(params2["decoder"]), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
def test_init_errors_name_the_entry(corpus, tmp_path):
    import jax

    from metalm_jax.parallel import mesh as meshlib
    from metalm_jax.training.init_from import apply_init
    from metalm_jax.training.trainer import build_trainer

    cfg, bert_dir = _micro_with_bert(corpus, tmp_path)
    trainer = build_trainer(cfg, meshlib.make_mesh((1, 1, 1)))
    with jax.set_mesh(trainer.mesh):
        state = trainer.init(jax.random.key(0))
        args = (state.params, trainer.abstract_state.params, trainer.state_sharding.params)
        cfg.init = [dict(format="hf_vit", source=bert_dir)]
        with pytest.raises(ConversionError):
            apply_init(cfg, *args, log=lambda _: None)
        cfg.init = [dict(source=bert_dir)]
        with pytest.raises(ConversionError, match=r"init\[0\]: needs 'format' and 'source'"):
            apply_init(cfg, *args, log=lambda _: None)
        cfg.init = [dict(format="orbax", source=str(tmp_path), target="decoder")]
        with pytest.raises(ConversionError, match="neither a run workdir"):
            apply_init(cfg, *args, log=lambda _: None)
        cfg.model.text_encoder.d_ff = 48  # the checkpoint's is 64
        cfg.init = [dict(format="hf_bert", source=bert_dir)]
        with pytest.raises(ConversionError, match=r"d_ff: config 48, checkpoint 64"):
            apply_init(cfg, *args, log=lambda _: None)
