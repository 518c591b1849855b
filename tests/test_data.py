"""Corpora (TFDS builders), tokenizer, the grain pipeline, and clear errors on bad input."""

import json
import os
import re

import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.corpora import text as text_corpora
from metalm_jax.data.feed import pipeline
from metalm_jax.data.tokenizer import BOS_ID, EOD_ID, EOS_ID, PAD_ID, Tokenizer
from metalm_jax.model.build import derive
from metalm_jax.types import Batch


def test_kjv_chapters_are_documents():
    chapters = text_corpora.kjv_chapters()
    assert len(chapters) == 1189
    assert chapters[0][0] == "Genesis 1" and chapters[0][1][0].startswith("In the beginning")
    assert sum(len(v) for _, v in chapters) == 31103
    val = [name for i, (name, _) in enumerate(chapters) if i % 25 == 12]
    assert len(val) == 48


def test_tokenizer_special_ids_and_documents(corpus):
    _, tok = corpus
    assert [tok.sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<s>", "</s>", "<unk>", "</d>"]
    sents = tok.encode_document(["In the beginning", "God created"])
    assert sents[0][-1] == EOS_ID and sents[1][-2:].tolist() == [EOS_ID, EOD_ID]
    assert tok.decode(sents[0][:-1]) == "In the beginning"


def test_tokenizer_with_wrong_special_ids_is_rejected(tmp_path):
    import sentencepiece as spm

    path = tmp_path / "plain.model"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g"] * 50),
        model_prefix=str(tmp_path / "plain"),
        vocab_size=12,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match=r"plain.model: id 0 must be '<pad>'"):
        Tokenizer(path.read_bytes(), str(path))


def test_local_text_builder_reads_txt_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("First para\nstill first.\n\nSecond para.\n")
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"body": "one\ntwo"}) + "\n\n" + json.dumps({"body": "three"}) + "\n")
    docs = list(text_corpora.read_local_documents([str(txt), str(jl)], "body"))
    assert docs == [
        ("a.txt", ["First para still first.", "Second para."]),
        ("b.jsonl:1", ["one", "two"]),
        ("b.jsonl:3", ["three"]),
    ]
    cfg = text_corpora.local_text_config([str(txt), str(jl)], "body", validation_fraction=0.0)
    b = text_corpora.LocalText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    with pytest.raises(ValueError, match=r"validation split would be empty \(3 documents"):
        text_corpora.load_split(b, "train")
    cfg = text_corpora.local_text_config([str(txt), str(jl)], "body", validation_fraction=0.5)
    b = text_corpora.LocalText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    train, val = text_corpora.load_split(b, "train"), text_corpora.load_split(b, "validation")
    assert len(train) + len(val) == 3 and len(train) > 0 and len(val) > 0
    ids = {train[i]["id"] for i in range(len(train))} | {val[i]["id"] for i in range(len(val))}
    assert {x.decode() if isinstance(x, bytes) else x for x in ids} == {
        "a.txt",
        "b.jsonl:1",
        "b.jsonl:3",
    }


@pytest.mark.parametrize(
    "content, key, message",
    [
        ('{"text": "ok"}\n{"text": "  \\n "}\n', "text", r"bad.jsonl:2: empty document"),
        ('{"text": "ok"}\nnot json\n', "text", r"bad.jsonl:2: not valid JSON"),
        ('{"body": "ok"}\n', "text", r"bad.jsonl:1: expected an object with key 'text'"),
        ('{"text": 5}\n', "text", r"bad.jsonl:1: field 'text' must be a string"),
    ],
)
def test_bad_jsonl_is_named(tmp_path, content, key, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(text_corpora.read_local_documents([str(p)], key))


def test_missing_corpus_files_and_unknown_corpora_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt' does not exist"):
        text_corpora.local_text_config([str(tmp_path / "nope.txt")])
    with pytest.raises(ValueError, match="unknown corpus 'pile'"):
        cfg = testing.micro_config()
        cfg.data.name = "pile"
        text_corpora.make_builder(cfg.data, None)


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl"])
def test_an_empty_corpus_file_is_an_error_naming_it(tmp_path, name):
    """One rule for .txt and .jsonl: a listed file without a document stops the run, whether
    alone or among good files (it used to be skipped silently, or an empty split unnamed)."""
    good = testing.write_kjv_jsonl(str(tmp_path / "good.jsonl"), 3)
    empty = tmp_path / name
    empty.write_text("\n\n  \n")
    for paths in ([str(empty)], [good, str(empty)]):
        with pytest.raises(ValueError, match=re.escape(f"{empty}: empty file; expected ")):
            list(text_corpora.read_local_documents(paths))


@pytest.mark.parametrize("name", ["notes.txt", "docs.jsonl"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    p = tmp_path / name
    lines = [json.dumps({"text": f"line {i}"}).encode() for i in (1, 2)]
    p.write_bytes(b"\n".join([*lines, b'{"text": "caf\xe9"}', b""]))  # Latin-1 e-acute
    where = r":3: not UTF-8 \(byte 0xe9 at line 3, column 14\)"
    with pytest.raises(ValueError, match=re.escape(str(p)) + where):
        list(text_corpora.read_local_documents([str(p)]))


def test_expand_paths_reads_lists_commas_and_globs(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "c.txt"]:
        (tmp_path / name).write_text("x")
    a, b, c = (str(tmp_path / n) for n in ["a.jsonl", "b.jsonl", "c.txt"])
    expand = text_corpora.expand_paths
    assert expand([c, a], "data.files") == (c, a)
    assert expand(f"{tmp_path}/*.jsonl, {c}", "data.files") == (a, b, c)  # globs sorted
    assert expand((f"{tmp_path}/*.jsonl",), "k") == (a, b)
    assert expand("", "k") == () and expand([], "k") == ()
    with pytest.raises(FileNotFoundError, match=r"data.files: pattern '.*/\*.csv' matches no"):
        expand(f"{c},{tmp_path}/*.csv", "data.files")
    with pytest.raises(FileNotFoundError, match=r"images.files: '.*/d.txt' does not exist"):
        expand([a, str(tmp_path / "d.txt")], "images.files")
    with pytest.raises(ValueError, match=r"data.files: '.*/a.jsonl' is named twice"):
        expand(f"{a},{tmp_path}/*.jsonl", "data.files")
    with pytest.raises(ValueError, match=r"data.files: expected paths"):
        expand(5, "data.files")


def test_train_iterator_batches_follow_the_contract(corpus):
    cfg, tok = corpus
    it = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    batches = [Batch.from_dict(next(it)) for _ in range(3)]
    for b in batches:
        b.validate()
        assert b.tokens.shape == (4, cfg.data.seq_len)
        assert np.all(b.tokens[:, 0] == BOS_ID)
        assert np.any(b.slot_index >= 0)
        assert np.all((b.segment_ids > 0) | (b.tokens == PAD_ID))
    # deterministic: the same seed gives the same stream
    again = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    np.testing.assert_array_equal(next(again)["tokens"], batches[0].tokens)


def test_text_iterator_resumes_exactly_with_documents_open(corpus):
    """The pretraining iterator's state (saved in checkpoints, as JSON) resumes on the same
    batches, spans included, with the default data.open_documents."""
    cfg, tok = corpus
    assert cfg.data.open_documents > 1  # the default reaches the micro config
    it = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    want = [next(it) for _ in range(4)]
    again = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    again.set_state(state)
    for w in want:
        g = next(again)
        for k in w:
            np.testing.assert_array_equal(w[k], g[k], err_msg=k)


def test_process_shards_are_disjoint(corpus):
    cfg, tok = corpus
    seen = []
    for index in range(2):
        docs = pipeline._documents(cfg, "train", tok, (index, 2), seed=None)
        seen.append({tuple(np.concatenate(docs[i]).tolist()) for i in range(len(docs))})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_eval_batches_are_fixed_and_padded(corpus):
    cfg, tok = corpus
    a = pipeline.eval_batches(cfg, tok, 4, 3, derive(cfg, tok).rows)
    b = pipeline.eval_batches(cfg, tok, 4, 3, derive(cfg, tok).rows)
    assert 1 <= len(a) <= 3
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert all(v.shape[0] == 4 for batch in a for v in batch.values())


def test_cached_tokenizer_with_other_vocab_is_an_error(corpus, tmp_path):
    cfg, tok = corpus
    path = tmp_path / "tokenizer.model"
    path.write_bytes(tok.sp.serialized_model_proto())
    cfg = cfg.copy_and_resolve_references()
    cfg.data.vocab_size = 512
    with pytest.raises(ValueError, match="vocab 400, config asks for 512"):
        pipeline.build_tokenizer(cfg, str(tmp_path))
    cfg.data.tokenizer_path = str(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        pipeline.build_tokenizer(cfg, str(tmp_path))
    assert os.path.exists(path)


def test_tokenized_documents_are_kept_after_the_first_epoch():
    """pipeline.TokenizedDocuments gives what .map(encode) gives, shuffled and repeated, and
    encodes each document once while they fit in max_tokens."""
    import grain

    from metalm_jax.data.feed.pipeline import TokenizedDocuments

    calls = []

    def encode(text):
        calls.append(text)
        return [np.asarray([ord(c) for c in text], np.int32)]

    src = grain.MapDataset.source([f"doc{i}" * (i + 1) for i in range(10)])[1::2]
    want = src.map(encode).shuffle(seed=3).repeat(None)
    got = TokenizedDocuments(src, encode).shuffle(seed=3).repeat(None)
    for i in range(25):  # 5 epochs
        assert np.array_equal(got[i][0], want[i][0])
    calls.clear()
    for i in range(25):
        got[i]
    assert calls == []  # all kept
    small = TokenizedDocuments(src, encode, max_tokens=20).shuffle(seed=3).repeat(None)
    calls.clear()
    for i in range(10):
        small[i]
    assert len(calls) > 5  # only the documents that fit 20 tokens are kept
