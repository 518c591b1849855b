"""A decoder with its own tokenizer: the run's tokenizer object and its special ids, a GPT-2
byte-level BPE tokenizer.json (pad and </d> mapped onto <|endoftext|>), and a MetaLM assembled
from pretrained parts (tiny random GPT-2 and BERT saved by transformers) whose greedy generation
matches transformers' before training and which then trains."""

import os

import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data import tokenizer
from metalm_jax.data.corpora.text import kjv_chapters
from metalm_jax.data.pretrain.packing import SentencePacker
from metalm_jax.data.rows import RowBuilder, Target, Text
from metalm_jax.data.spans import SpanConfig, build_example
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, JsonTokenizer
from metalm_jax.types import ConfigError
from tests import _needs

VOCAB = 320  # 256 bytes + 63 merges + <|endoftext|>
EOT = VOCAB - 1  # <|endoftext|>, GPT-2's last id


_hf = _needs.torch_and_transformers  # (torch, transformers), or skip naming the package


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory):
    texts = [v for _, verses in kjv_chapters()[:20] for v in verses]
    return testing.write_byte_bpe(str(tmp_path_factory.mktemp("bpe") / "tokenizer.json"), texts)


def test_gpt2_tokenizer_maps_its_specials_onto_endoftext(bpe_path):
    tok = tokenizer.open_tokenizer(bpe_path)
    assert isinstance(tok, JsonTokenizer) and tok.kind == "json" and tok.vocab_size == VOCAB
    assert (tok.pad, tok.bos, tok.eos, tok.unk, tok.doc_end) == (EOT,) * 5
    assert tok.mapped == ("pad", "unk", "doc_end")  # <s> and </s> are GPT-2's own
    ids = tok.encode("In the beginning God créated")
    assert EOT not in ids and tok.decode(ids) == "In the beginning God créated"
    assert tok.decode([EOT, *ids, EOT]) == "In the beginning God créated"
    # every paragraph ends in </s>; </d> is </s>, so a document ends with one <|endoftext|>
    doc = tok.encode_document(["a b", "c d"])
    assert [d[-1] for d in doc] == [EOT, EOT] and doc[1][-2] != EOT
    # a directory holding a tokenizer.json opens it
    assert tokenizer.open_tokenizer(os.path.dirname(bpe_path)).source == bpe_path


def test_sentencepiece_ids_unchanged(corpus):
    _, tok = corpus
    assert tok.kind == "sentencepiece" and tok.ids == SENTENCEPIECE_IDS
    assert (tok.pad, tok.bos, tok.eos, tok.unk, tok.doc_end) == (0, 1, 2, 3, 4)
    doc = tok.encode_document(["In the beginning", "God created"])
    assert doc[0][-1] == 2 and doc[1][-2:].tolist() == [2, 4]


def test_rows_use_the_tokenizers_ids(bpe_path):
    """Packing, span rows and task rows put the tokenizer's <s> and <pad>, not SentencePiece's."""
    ids = tokenizer.open_tokenizer(bpe_path).ids
    docs = iter([[np.array([11, 12, EOT], np.int32)], [np.array([21, EOT], np.int32)]])
    row = SentencePacker(8, lambda: next(docs), ids).next_row()
    np.testing.assert_array_equal(row["tokens"], [EOT, 11, 12, EOT, EOT, 21, EOT, EOT])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 2, 2, 2, 0])

    ex = build_example(row, [], SpanConfig(1, 2, 0.25, 4, ids=ids))
    assert ex["targets"][-2:].tolist() == [EOT, EOT] and ex["loss_weights"][-2:].sum() == 0
    assert ex["enc_tokens"].tolist() == [EOT] * 4

    b = RowBuilder(8, 4, ids=ids)
    assert b.add([Text([5, 6]), Target([7, EOT])])
    r = b.row()
    np.testing.assert_array_equal(r["tokens"], [EOT, 5, 6, 7, EOT, EOT, EOT, EOT])
    np.testing.assert_array_equal(r["loss_weights"], [0, 0, 1, 1, 0, 0, 0, 0])


def test_encoder_grid_is_padded_with_the_encoders_pad(bpe_path, tmp_path):
    """With an encoder of its own vocabulary (BERT WordPiece) the encoder grid's fill is its
    [PAD], not the decoder's <pad> (GPT-2's 319 lies past a small encoder's embedding table:
    gathered there it is NaN)."""
    from metalm_jax.data.spans import RetokenizedEncoding
    from tests.test_convert import _save_wordpiece

    tok = tokenizer.open_tokenizer(bpe_path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "let", "there", "be", "light"]
    enc = RetokenizedEncoding(_save_wordpiece(str(tmp_path / "wp.json"), vocab), tok, 8)
    ids = tok.encode("let there be light")
    tokens = np.array([EOT, 50, *ids, 60, EOT, EOT], np.int32)
    seg = np.array([1] * (len(tokens) - 1) + [0], np.int32)
    row = {"tokens": tokens, "segment_ids": seg}
    ex = build_example(row, [(2, 2 + len(ids))], SpanConfig(1, 8, 0.25, 12, ids=tok.ids), enc)
    np.testing.assert_array_equal(ex["enc_tokens"], [2, 4, 5, 6, 7, 3, 0, 0, 0, 0, 0, 0])
    assert ex["tokens"][-1] == EOT and ex["targets"][-1] == EOT


def test_config_and_workdir_name_the_tokenizer(bpe_path, tmp_path):
    src = os.path.dirname(bpe_path)
    init = [dict(format="hf_bert", source=src), dict(format="hf_gpt2", source=src)]
    assert tokenizer.configured_path("", init) == bpe_path
    assert tokenizer.configured_path("/x.model", init) == "/x.model"
    assert tokenizer.configured_path("", init[:1]) == ""
    # a run saves its tokenizer.json in the workdir; loading prefers that copy
    work = str(tmp_path / "run")
    tok = tokenizer.for_run(work, bpe_path, None, VOCAB)
    assert tok.source == bpe_path and os.path.isfile(os.path.join(work, "tokenizer.json"))
    assert tokenizer.saved(work, "").source == os.path.join(work, "tokenizer.json")
    assert tokenizer.for_run(work, "", None, VOCAB).ids == tok.ids  # resumed: the saved copy
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="bad.json as a Hugging Face tokenizer.json"):
        tokenizer.open_tokenizer(str(bad))


# -- pretrained parts: GPT-2 decoder (+ BERT encoder) -----------------------------------------


@pytest.fixture(scope="module")
def gpt2_dir(bpe_path, tmp_path_factory):
    """A tiny random GPT2LMHeadModel with the BPE's vocabulary and its tokenizer.json."""
    import shutil

    torch, tf = _hf()
    torch.manual_seed(0)
    config = tf.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=EOT, eos_token_id=EOT,
    )  # fmt: skip
    model = tf.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases 0 and LayerNorms 1 at init: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    shutil.copyfile(bpe_path, path / "tokenizer.json")
    return str(path), model


def _gpt2_run_config(corpus, gpt2_dir):
    from metalm_jax import convert

    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    convert.apply_arch(cfg, "hf_gpt2", gpt2_dir)  # data.vocab_size too
    cfg.init = [dict(format="hf_gpt2", source=gpt2_dir)]  # the tokenizer comes with it
    cfg.train.eval_every, cfg.train.sample_tokens = 0, 0
    return cfg


def _hf_greedy(model, ids, n):
    """transformers' greedy continuation of one unpadded prompt (stops at <|endoftext|>)."""
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
            eos_token_id=EOT, pad_token_id=EOT,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


@pytest.mark.slow
def test_gpt2_decoder_generates_as_transformers(corpus, gpt2_dir, tmp_path, capsys):
    """init=[hf_gpt2] with its tokenizer.json: the rows carry GPT-2's ids, and the converted
    decoder's greedy KV-cache generation (left-padded batch) equals transformers' generate
    token for token, read back from the run's own workdir (tokenizer.json saved there)."""
    import jax

    from metalm_jax.data.feed import pipeline
    from metalm_jax.eval import decode
    from metalm_jax.eval.generation import generate_text
    from metalm_jax.eval.load import load_run
    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.model.build import derive, dummy_batch

    path, hf_model = gpt2_dir
    cfg = _gpt2_run_config(corpus, path)
    cfg.model.text_encoder.enabled = False
    cfg.optim.frozen = [r"^(embed|pos_embed|decoder)(/|$)"]  # the step changes nothing
    cfg.train.steps = 1
    work = str(tmp_path / "run")
    train_and_evaluate(cfg, work)
    out = capsys.readouterr().out
    assert f"tokenizer {path}/tokenizer.json ({VOCAB} pieces)" in out
    assert os.path.isfile(os.path.join(work, "tokenizer.json"))

    cfg2, tok, inference, params = load_run(work)
    assert isinstance(tok, JsonTokenizer) and tok.source == os.path.join(work, "tokenizer.json")
    batch = next(iter(pipeline.train_iterator(cfg2, tok, 4, derive(cfg2, tok).rows)))
    assert np.all(batch["tokens"][:, 0] == EOT)  # each row starts a segment with <s>

    prompts = ["In the beginning", "And God said, Let there be light: and"]
    n = 12
    want = [_hf_greedy(hf_model, [EOT, *tok.encode(p)], n) for p in prompts]
    ids = [[tok.bos, *tok.encode(p)] for p in prompts]
    grid = decode.left_pad_prompts(ids, pad_id=tok.pad)
    prompt = dummy_batch(len(ids), grid["tokens"].shape[1], 1).replace(**grid)
    got = np.asarray(
        decode.generate(
            inference.model, params, prompt, jax.random.key(0), max_new=n,
            cfg=decode.SamplingConfig(), stop_ids=(tok.doc_end,), pad_id=tok.pad,
        )
    )  # fmt: skip
    for g, w in zip(got.tolist(), want, strict=True):
        assert g[: len(w)] == w and all(t == tok.pad for t in g[len(w) :])
    texts = generate_text(work, prompts, max_tokens=n)
    assert texts == [tok.decode(w) for w in want]


@pytest.mark.slow
def test_gpt2_decoder_and_bert_encoder_train(corpus, gpt2_dir, tmp_path, capsys):
    """init=[hf_gpt2 decoder, hf_bert encoder] (spans re-tokenized with BERT's own WordPiece)
    runs a few training steps with the GPT-2 tokenizer end to end, then generates."""
    import json

    from metalm_jax import convert
    from metalm_jax.eval.generation import generate_text
    from metalm_jax.loop import train_and_evaluate
    from tests.test_convert import _micro_with_bert

    path, _ = gpt2_dir
    cfg, bert_dir = _micro_with_bert(corpus, tmp_path)
    convert.apply_arch(cfg, "hf_gpt2", path)
    cfg.data.tokenizer_path = ""  # the GPT-2's own, from its init entry
    cfg.init = [dict(format="hf_gpt2", source=path), dict(format="hf_bert", source=bert_dir)]
    cfg.optim.frozen = [r"^text_encoder/"]
    cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every = 4, 1, 4
    work = str(tmp_path / "run")
    train_and_evaluate(cfg, work)
    out = capsys.readouterr().out
    assert f"init[0] embed, pos_embed, decoder <- hf_gpt2 {path}" in out
    assert f"tokenizer: the source's own {path}/tokenizer.json" in out
    assert "init[1] text_encoder <- hf_bert" in out
    assert "freshly initialised: connector" in out
    with open(os.path.join(work, "metrics.jsonl")) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    (text,) = generate_text(work, ["In the beginning"], max_tokens=6)
    assert isinstance(text, str)


def test_finetune_copies_the_source_runs_tokenizer_json(bpe_path, tmp_path):
    """finetune.from_run: a source run with a tokenizer.json gets it copied into the new
    workdir under that name (the finetuning run then reads it as its saved tokenizer)."""
    import shutil

    from metalm_jax.config import base_config
    from metalm_jax.training.finetune import _copy_tokenizer

    source = tmp_path / "source"
    source.mkdir()
    shutil.copyfile(bpe_path, source / "tokenizer.json")
    out = base_config()
    out.data.tokenizer_path = "/elsewhere.model"
    work = str(tmp_path / "ft")
    _copy_tokenizer(base_config(), str(source), work, out)
    assert out.data.tokenizer_path == ""
    assert not os.path.exists(os.path.join(work, "tokenizer.model"))
    assert tokenizer.for_run(work, "", None, VOCAB).source == os.path.join(work, "tokenizer.json")
