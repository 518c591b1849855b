"""Prepared image-text rows (issue 21): webdataset .tar and Parquet sources through `prepare`
into rows of resized JPEG pairs, mixed with the text rows at images.text_ratio in an order
that is a pure function of (seed, step, process, count)."""

import io
import json
import os
import tarfile

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from metalm_jax import testing
from metalm_jax.data.feed import pipeline, prepare, prepared
from metalm_jax.data.pretrain import prepared_rows
from metalm_jax.model.build import derive, image_layout
from metalm_jax.types import DataError


def _vl_config(corpus, images, out, **data):
    cfg, tok = corpus
    c = testing.micro_vl_config(cfg.data.files, cfg.data.tfds_data_dir)
    c.data.tokenizer_path, c.data.prepared_dir = tok.source, str(out)
    c.images.name, c.images.files = "files", [str(p) for p in images]
    c.images.validation_fraction = 0.1
    for k, v in data.items():
        c.data[k] = v
    return c


def _parquet(path, n=12, size=48):
    """img2dataset's Parquet output: image bytes (PNG here, 48 x 40), captions, and a failed
    download (no image) that is passed over."""
    rows = {"key": [], "jpg": [], "txt": []}
    rng = np.random.default_rng(0)
    for k in range(n):
        buf = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 255, (40, size, 3), np.uint8)).save(buf, "PNG")
        rows["key"].append(f"p{k:03d}")
        rows["jpg"].append(buf.getvalue())
        rows["txt"].append(f"noise picture number {k}")
    rows["key"].append("failed")
    rows["jpg"].append(None)
    rows["txt"].append(None)
    pq.write_table(pa.table(rows), path)
    return path


def _quiet(line):
    del line


@pytest.fixture(scope="module")
def prepared_vl(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("vl")
    tars = testing.write_emoji_webdataset(str(base / "wds"), shards=1, per_shard=40, size=32)
    sources = [*tars, _parquet(base / "noise.parquet")]
    cfg = _vl_config(corpus, sources, base / "out")
    layout = image_layout(cfg)
    manifest = prepare.prepare(cfg, workers=1, log=_quiet, layout=layout)
    return cfg, corpus[1], manifest, layout


def test_image_text_sources_become_rows_of_resized_jpeg_pairs(prepared_vl):
    cfg, tok, m, layout = prepared_vl
    t, v = m["splits"]["images_train"], m["splits"]["images_validation"]
    assert t["documents"] + v["documents"] == 40 + 12  # the failed download passed over
    assert m["config"]["images.layout"] == prepared.layout_key(layout)
    assert len(m["config"]["images.files resolved"]) == 2
    pairs = 0
    for split in ("images_train", "images_validation"):
        src = prepared.split_source(cfg.data.prepared_dir, m, split)
        for k in range(len(src)):
            row = prepared_rows.decode_pairs(src[k], f"{split} {k}")
            assert 1 <= len(row) <= layout.images_per_row
            assert sum(layout.pair_length(len(c)) for _, c in row) <= layout.seq_len
            for image, caption in row:
                im = PIL.Image.open(io.BytesIO(image))
                assert im.format == "JPEG" and min(im.size) == layout.image_size, im.size
                assert caption[-1] == tok.eos
                pairs += 1
    assert pairs == 52


def test_vl_batches_mix_at_the_ratio_for_any_process_count(prepared_vl):
    """text_ratio 0.5: half of every batch is text rows, half image-text rows (with an image);
    steps 0..4 by one process equal the two halves by two processes."""
    cfg, tok, _, _ = prepared_vl
    fmt = derive(cfg, tok).rows
    one = pipeline.prepared_batches(cfg, tok, 8, fmt, (0, 1))
    halves = [pipeline.prepared_batches(cfg, tok, 4, fmt, (p, 2)) for p in range(2)]
    for s in range(5):
        whole = one[s]
        with_image = whole["image_valid"].reshape(8, -1).any(axis=1)
        assert with_image.sum() == 4, (s, with_image)
        for k, v in whole.items():
            np.testing.assert_array_equal(v, np.concatenate([halves[0][s][k], halves[1][s][k]]))
    assert not np.array_equal(one[0]["tokens"], one[1]["tokens"])
    sets = pipeline.eval_sets(cfg, tok, 4, fmt)
    assert sets["caption"] and sets["text"]


def test_a_text_only_preparation_is_refused_for_a_vl_run(prepared_vl, tmp_path):
    from metalm_jax.types import ConfigError

    cfg, tok, m, _ = prepared_vl
    text_only = {
        **m,
        "config": {k: v for k, v in m["config"].items() if not k.startswith("images.")},
    }
    fmt = derive(cfg, tok).rows
    with pytest.raises(ConfigError, match="text only, this config reads images"):
        prepared.check_manifest(cfg, tok, text_only, fmt.layout)
    changed = json.loads(json.dumps(m))
    changed["config"]["images.layout"]["image_size"] = 64
    with pytest.raises(ConfigError, match="images.layout=.*model.vision as prepared"):
        prepared.check_manifest(cfg, tok, changed, fmt.layout)


def _bad_tar(path):
    good = testing.write_emoji_webdataset(str(path.parent / "good"), 1, 12, 32)[0]
    with tarfile.open(good) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.startswith("000000001.jpg"):
                data = b"\xff\xd8\xff\xe0 not a jpeg"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return path


def test_a_bad_image_is_named_or_counted_into_the_manifest(corpus, tmp_path):
    bad = _bad_tar(tmp_path / "bad.tar")
    cfg = _vl_config(corpus, [bad], tmp_path / "out")
    with pytest.raises(DataError, match=r"bad\.tar.*000000001"):
        prepare.prepare(cfg, log=_quiet, layout=image_layout(cfg))
    cfg = _vl_config(corpus, [bad], tmp_path / "skip", on_bad_record="skip")
    cfg.images.validation_fraction = 0.3
    m = prepare.prepare(cfg, log=_quiet, layout=image_layout(cfg))
    assert m["bad_records_skipped"] == 1 and "000000001" in m["first_bad_record"]
    pairs = [m["splits"][s]["documents"] for s in ("images_train", "images_validation")]
    assert sum(pairs) == 11, pairs


@pytest.fixture
def fake_gcs(monkeypatch):
    """gs:// served by fsspec's in-memory filesystem, for etils.epath and fsspec alike (no
    bucket is reachable offline): the store, emptied after the test."""
    from fsspec.implementations.memory import MemoryFileSystem

    class InMemoryGCS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store, pseudo_dirs = {}, [""]

    import sys

    registry = sys.modules["fsspec.registry"]._registry  # register_implementation's dict
    for name in ("gs", "gcs"):
        monkeypatch.setitem(registry, name, InMemoryGCS)
    yield InMemoryGCS.store
    InMemoryGCS.store.clear()


def test_a_bucket_to_a_bucket(corpus, tmp_path, fake_gcs):
    """Raw sources on gs:// (a .jsonl.zst corpus, webdataset shards) prepared into gs://: the
    shards are written locally and copied whole (no partial object in the bucket), the manifest
    names the gs:// sources, and the rows read back equal a local preparation's. (Training
    reads gs:// shards through array_record's own GCS reader, which needs a real bucket: not
    tested here; the gcsfuse mount of launch/tpu_vm.sh is the tested alternative.)"""
    from etils import epath

    cfg, tok = corpus
    local = tmp_path / "local"
    tars = testing.write_emoji_webdataset(str(local / "wds"), 1, 30, 32)
    text = testing.write_kjv_jsonl(str(local / "kjv.jsonl"), 30)
    zst = local / "kjv.jsonl.zst"
    zst.write_bytes(zstandard.compress(open(text, "rb").read()))
    for f in (str(zst), tars[0]):
        epath.Path(f"gs://bucket/raw/{os.path.basename(f)}").write_bytes(open(f, "rb").read())
    remote = _vl_config(corpus, ["gs://bucket/raw/*.tar"], "gs://bucket/prepared")
    remote.data.files = ["gs://bucket/raw/kjv.jsonl.zst"]
    m = prepare.prepare(remote, log=_quiet, layout=image_layout(remote))
    assert m["config"]["images.files resolved"] == ["gs://bucket/raw/00000.tar"]
    top = "gs://bucket/prepared/"
    names = {k[len(top) :] for k in fake_gcs if k.startswith(top) and "/" not in k[len(top) :]}
    for split in m["splits"].values():
        assert {name for name, _ in split["files"]} <= names
    assert not any(".tmp-" in n for n in names)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in names:
        (copy / name).write_bytes(epath.Path(f"gs://bucket/prepared/{name}").read_bytes())
    here = _vl_config(corpus, tars, tmp_path / "here")
    here.data.files = [str(zst)]
    n = prepare.prepare(here, log=_quiet, layout=image_layout(here))
    assert n["splits"] == m["splits"]
    for split in m["splits"]:
        a = prepared.split_source(str(copy), m, split)
        b = prepared.split_source(str(tmp_path / "here"), n, split)
        assert [a[k] for k in range(len(a))] == [b[k] for k in range(len(b))], split


def test_image_sources_prepare_cannot_read_are_named(corpus, tmp_path):
    from metalm_jax.types import ConfigError

    (tmp_path / "notes.txt").write_text("not an image-text source")
    cfg = _vl_config(corpus, [tmp_path / "notes.txt"], tmp_path / "out")
    with pytest.raises(ConfigError, match=r"images.files: '.*notes.txt' must be a folder, .jsonl"):
        prepare.prepare(cfg, log=_quiet, layout=image_layout(cfg))
    cfg.images.name = "openmoji"
    with pytest.raises(ConfigError, match=r"images.name='openmoji': prepare reads .* images.files"):
        prepare.prepare(cfg, log=_quiet, layout=image_layout(cfg))
