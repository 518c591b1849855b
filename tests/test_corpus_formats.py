"""The reader layer (data/corpora/sources.py, documents.py, pairs.py): every input format gives
the same records as its plain equivalent, bad records are one line naming file and record (or
skipped and counted), tar members never reach the filesystem, decompression bombs are bad
records. Tiny files made in tmp_path; one end-to-end training on a .jsonl.zst (slow)."""

import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zlib

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
import zstandard

from metalm_jax import testing
from metalm_jax.data import images
from metalm_jax.data.corpora import documents, image_text, pairs, sources
from metalm_jax.data.corpora import text as text_corpora
from metalm_jax.types import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOCS = [
    "In the beginning God created the heaven and the earth.\nAnd the earth was without form.",
    "Second document, one paragraph.",
    "  Third \n\n  with blank lines between paragraphs  \n",
    "Fourth: caf\u00e9 and na\u00efve, UTF-8 beyond ASCII.",
    "Fifth.\nSixth paragraph of it.\nSeventh.",
]
WANT = [documents.paragraphs(d) for d in DOCS]


def _jsonl(docs=DOCS) -> bytes:
    return "".join(json.dumps({"text": d, "n": i}) + "\n" for i, d in enumerate(docs)).encode()


def _zst(data: bytes, frames: int = 2) -> bytes:
    """`data` as `frames` zstd frames back to back (as pzstd and many writers produce)."""
    cut = len(data) // frames
    parts = [data[:cut], data[cut:]] if frames == 2 else [data]
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)


def _parquet(path, docs=DOCS, **columns):
    pq.write_table(pa.table({"text": docs, **columns}), path, row_group_size=2)


def _docs(paths, text_key="text", policy="error"):
    tally = sources.Tally(policy)
    got = list(documents.read_documents([str(p) for p in paths], text_key, tally))
    return got, tally


@pytest.fixture
def memory_fs():
    """fsspec's in-memory filesystem (memory://), emptied after the test."""
    import fsspec

    fs = fsspec.filesystem("memory")
    yield fs
    for path in list(fs.store):
        fs.store.pop(path, None)
    fs.pseudo_dirs[:] = [""]


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_text_format_yields_the_jsonl_documents(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".parquet":
        _parquet(path)
    else:
        data = _jsonl()
        path.write_bytes(
            {".jsonl": data, ".jsonl.gz": gzip.compress(data)}.get(suffix) or _zst(data)
        )
    got, tally = _docs([path])
    assert [paras for _, paras in got] == WANT
    ids = [doc_id for doc_id, _ in got]
    sep, first = ("#", 0) if suffix == ".parquet" else (":", 1)  # rows from 0, lines from 1
    assert ids == [f"corpus{suffix}{sep}{i + first}" for i in range(len(DOCS))]
    assert (tally.seen, tally.skipped) == (len(DOCS), 0)


def test_a_parquet_column_is_named_by_text_key_and_checked(tmp_path):
    path = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"content": DOCS, "id": list(range(5))}), path)
    assert [p for _, p in _docs([path], "content")[0]] == WANT
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: no column 'text' (columns: content, id); set data.text_key"),
    ):
        _docs([path])
    with pytest.raises(
        DataError, match=re.escape(f"{path}: column 'id' holds int64; expected string")
    ):
        _docs([path], "id")


def test_a_glob_and_a_memory_url_read_like_local_files(tmp_path, memory_fs):
    data = _jsonl()
    lines = data.splitlines(keepends=True)
    (tmp_path / "a.jsonl.zst").write_bytes(_zst(b"".join(lines[:2])))
    (tmp_path / "b.jsonl.zst").write_bytes(_zst(b"".join(lines[2:])))
    paths = sources.expand_paths(f"{tmp_path}/*.jsonl.zst", "data.files")
    assert paths == (str(tmp_path / "a.jsonl.zst"), str(tmp_path / "b.jsonl.zst"))
    assert [p for _, p in _docs(paths)[0]] == WANT

    memory_fs.pipe("/bucket/c4/part-0.jsonl.zst", _zst(data))
    memory_fs.pipe("/bucket/c4/part-1.parquet", b"")
    _parquet_bytes = io.BytesIO()
    pq.write_table(pa.table({"text": DOCS}), _parquet_bytes, row_group_size=2)
    memory_fs.pipe("/bucket/c4/part-1.parquet", _parquet_bytes.getvalue())
    urls = sources.expand_paths("memory://bucket/c4/part-*", "data.files")
    assert urls == ("memory:///bucket/c4/part-0.jsonl.zst", "memory:///bucket/c4/part-1.parquet")
    got, _ = _docs(urls)
    assert [p for _, p in got] == WANT + WANT
    assert got[0][0] == "part-0.jsonl.zst:1" and got[5][0] == "part-1.parquet#0"
    with pytest.raises(
        FileNotFoundError, match=r"data.files: pattern 'memory://bucket/none/\*' matches no files"
    ):
        sources.expand_paths("memory://bucket/none/*", "data.files")


def test_the_tfds_builder_reads_zst_parquet_and_urls(tmp_path, memory_fs, caplog):
    """LocalText through the reader layer: both splits hold every document once, and a bad
    line under on_bad_record=skip is left out, counted in one log line and in metadata.json."""
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(_zst(_jsonl() + b'["not an object"]\n'))
    pq_path = tmp_path / "b.parquet"
    _parquet(pq_path)
    memory_fs.pipe("/bucket/c.jsonl.gz", gzip.compress(_jsonl()))
    files = [str(zst), str(pq_path), "memory://bucket/c.jsonl.gz"]
    cfg = text_corpora.local_text_config(files, validation_fraction=0.3, on_bad_record="skip")
    assert cfg.name != text_corpora.local_text_config(files[1:], validation_fraction=0.3).name
    builder = text_corpora.LocalText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    with caplog.at_level("WARNING"):
        train = text_corpora.load_split(builder, "train")
    val = text_corpora.load_split(builder, "validation")
    got = {}
    for src in (train, val):
        for i in range(len(src)):
            got[src[i]["id"].decode()] = text_corpora.decode_example(src[i])
    assert len(got) == 15 and len(val) > 0 and len(train) > 0
    assert got["a.jsonl.zst:2"] == got["b.parquet#1"] == got["c.jsonl.gz:2"] == WANT[1]
    [line] = [r.getMessage() for r in caplog.records if "bad record" in r.getMessage()]
    assert line.startswith(f"local_text/{cfg.name}: skipped 1 bad record (data.on_bad_record=skip)")
    assert f"the first: {zst}:6: expected an object with key 'text'" in line
    assert builder.info.metadata["bad_records_skipped"] == 1
    again = text_corpora.LocalText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    assert again.info.metadata["bad_records_skipped"] == 1  # read back from metadata.json


# --- bad text records --------------------------------------------------------------------------

_GOOD = _jsonl(DOCS[:2])  # lines 1-2


def _garbage_after_frame(p):
    p.write_bytes(zstandard.ZstdCompressor().compress(_GOOD) + b"this is not a zstd frame")


def _truncated_frame(p):
    p.write_bytes(zstandard.ZstdCompressor().compress(_GOOD) + _zst(_jsonl(DOCS[2:]), 1)[:-7])


def _truncated_gzip(p):
    p.write_bytes(gzip.compress(_GOOD + _jsonl(DOCS[2:]))[:-40])


def _latin1_line(p):
    p.write_bytes(_zst(_GOOD + b'{"text": "caf\xe9"}\n' + _jsonl(DOCS[2:3])))


def _list_line(p):
    p.write_bytes(gzip.compress(_GOOD + b"[1, 2]\n" + _jsonl(DOCS[2:3])))


def _null_row(p):
    _parquet(p, [DOCS[0], DOCS[1], None, DOCS[2]])


def _not_parquet(p):
    p.write_bytes(b"PAR1 but not really a parquet file")


def _corrupt_row_group(p):
    """Row group 0 (rows 0-1) damaged; row group 1 (rows 2-3) intact."""
    _parquet(p, DOCS[:4])
    column = pq.ParquetFile(p).metadata.row_group(0).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(p.read_bytes())
    data[start + 8 : start + column.total_compressed_size - 2] = b"\xff" * (
        column.total_compressed_size - 10
    )
    p.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, make, record, kept",
    [
        (
            "bad_frame.jsonl.zst",
            _garbage_after_frame,
            r":3: cannot read line 3 or any after it: truncated or corrupt data "
            r"\(ZstdError: .*\); expected a complete zstandard file",
            2,
        ),
        (
            "cut.jsonl.zst",
            _truncated_frame,
            r":3: cannot read line 3 or any after it: .*the data ends inside a frame.*",
            2,
        ),
        (
            "cut.jsonl.gz",
            _truncated_gzip,
            r":\d: cannot read line \d or any after it: truncated or corrupt data "
            r"\(EOFError: .*\); expected a complete gzip file",
            None,
        ),
        (
            "latin1.jsonl.zst",
            _latin1_line,
            r":3: not UTF-8 \(byte 0xe9 at line 3, column 14\); expected a UTF-8 text file",
            3,
        ),
        ("list.jsonl.gz", _list_line, r":3: expected an object with key 'text'", 3),
        ("null.parquet", _null_row, r": row 2: column 'text' is null; expected a string", 3),
        (
            "junk.parquet",
            _not_parquet,
            r": not a readable Parquet file \(.*\); expected a Parquet file",
            0,
        ),
        (
            "damaged.parquet",
            _corrupt_row_group,
            r": row 0: corrupt Parquet data in row group 0 \(rows 0-1; .*\); "
            "expected a readable Parquet file",
            2,
        ),
    ],
)
def test_a_bad_text_record_is_one_line_or_skipped_and_counted(tmp_path, name, make, record, kept):
    path = tmp_path / name
    make(path)
    good = tmp_path / "good.jsonl"
    good.write_bytes(_jsonl(DOCS[3:]))
    with pytest.raises(DataError) as e:
        _docs([path, good])
    message = str(e.value)
    assert "\n" not in message and re.fullmatch(re.escape(str(path)) + record, message), message
    got, tally = _docs([path, good], policy="skip")  # the good records stay, the bad one counted
    assert tally.skipped == 1 and tally.first == message
    mine = [paras for doc_id, paras in got if doc_id.startswith(name)]
    if kept is not None:
        assert len(mine) == kept
    assert all(paras in WANT for paras in mine)
    assert [paras for doc_id, paras in got if doc_id.startswith("good")] == WANT[3:]


def test_empty_files_and_unknown_suffixes_are_errors_under_either_policy(tmp_path):
    empty = tmp_path / "empty.jsonl.zst"
    empty.write_bytes(_zst(b"\n\n", 1))
    for policy in ("error", "skip"):
        with pytest.raises(
            DataError, match=re.escape(f"{empty}: empty file; expected one JSON object per line")
        ):
            _docs([empty], policy=policy)
    csv = tmp_path / "c.csv"
    csv.write_text("a,b\n")
    with pytest.raises(
        ValueError,
        match=r"data.files: '.*c.csv' must end in .txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet",
    ):
        text_corpora.local_text_config([str(csv)])
    with pytest.raises(
        ValueError, match=r"data.on_bad_record: expected 'error' or 'skip', got 'ignore'"
    ):
        text_corpora.local_text_config([str(empty)], on_bad_record="ignore")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "empty.jsonl.zst").write_bytes(b"")
    with pytest.raises(DataError, match=r"have the same name 'empty.jsonl.zst'"):
        text_corpora.local_text_config([str(empty), str(tmp_path / "x" / "empty.jsonl.zst")])


def test_a_large_zst_file_streams(tmp_path):
    """An 8 MB corpus read line by line, never decompressed whole: the reader's buffers stay at
    a few chunks (peak traced memory far under the text's size)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    words = np.array(["".join(rng.choice(list("abcdefghij"), 6)) for _ in range(500)])
    path = tmp_path / "big.jsonl.zst"
    with open(path, "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as w:
        for _ in range(8):
            text = [" ".join(rng.choice(words, 140)) for _ in range(1000)]
            w.write("".join(json.dumps({"text": t}) + "\n" for t in text).encode())
    tracemalloc.start()
    count = sum(1 for _ in sources.numbered_lines(str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 8000 and peak < 2**20, peak


# --- image-text ---------------------------------------------------------------------------------


def _image(seed: int, fmt: str = "PNG") -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (6 + seed, 5, 3), dtype=np.uint8)
    out = io.BytesIO()
    PIL.Image.fromarray(rgb).save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


PAIRS = [
    ("000", _image(0), "a noisy square"),
    ("001", _image(1, "JPEG"), "a jpeg"),
    ("002", _image(2), "third  one\n"),
]
EXT = {b"\x89PNG": "png", b"\xff\xd8\xff\xe0": "jpg"}


def _ext(data: bytes) -> str:
    return EXT[data[:4]]


def _member(tf, name: str, data: bytes = b"", kind=tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar(path, samples=PAIRS, extra=()):
    with tarfile.open(path, "w") as tf:
        for key, image, caption in samples:
            _member(tf, f"{key}.{_ext(image)}", image)
            _member(tf, f"{key}.txt", caption.encode())
            _member(tf, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
        for args in extra:
            _member(tf, *args)


def _img2dataset_parquet(path, samples=PAIRS):
    """img2dataset's parquet output: key, jpg (image bytes), txt, status; a failed download is
    a row with null jpg and txt."""
    rows = [(k, im, c, "success") for k, im, c in samples] + [
        ("003", None, None, "failed_to_download")
    ]
    k, im, c, st = zip(*rows, strict=True)
    table = pa.table({"key": k, "jpg": pa.array(im, pa.binary()), "txt": c, "status": st})
    pq.write_table(table, path, row_group_size=2)


def _pairs(paths, policy="error", **kw):
    tally = sources.Tally(policy)
    return list(pairs.read_pairs([str(p) for p in paths], tally, **kw)), tally


def test_every_image_text_format_yields_the_folder_pairs(tmp_path, memory_fs):
    folder = tmp_path / "pics"
    folder.mkdir()
    for key, image, caption in PAIRS:
        (folder / f"{key}.{_ext(image)}").write_bytes(image)
        (folder / f"{key}.txt").write_text(caption)
    _tar(tmp_path / "shard.tar")
    _img2dataset_parquet(tmp_path / "shard.parquet")
    memory_fs.pipe("/bucket/url.tar", (tmp_path / "shard.tar").read_bytes())
    want = [(image, " ".join(caption.split())) for _, image, caption in PAIRS]
    for path, ids in [
        (folder, [f"pics/{k}.{_ext(im)}" for k, im, _ in PAIRS]),
        (tmp_path / "shard.tar", [f"shard.tar/{k}" for k, _, _ in PAIRS]),
        (tmp_path / "shard.parquet", ["shard.parquet#0", "shard.parquet#1", "shard.parquet#2"]),
        ("memory://bucket/url.tar", [f"url.tar/{k}" for k, _, _ in PAIRS]),
    ]:
        got, tally = _pairs([path])
        assert [(im, c) for _, im, c in got] == want, path  # RGB PNG / JPEG stored as they are
        assert [i for i, _, _ in got] == ids
        assert tally.skipped == 0


def test_the_image_text_builder_reads_tar_and_parquet(tmp_path):
    _tar(tmp_path / "shard.tar")
    _img2dataset_parquet(tmp_path / "shard.parquet")
    paths = [str(tmp_path / "shard.tar"), str(tmp_path / "shard.parquet")]
    cfg = image_text.local_image_text_config(paths, validation_fraction=0.5)
    b = image_text.LocalImageText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    tfds.disable_progress_bar()
    b.download_and_prepare()
    got = {}
    for split in ("train", "validation"):
        src = b.as_data_source(split=split)
        got.update({src[i]["id"].decode(): src[i] for i in range(len(src))})
    assert sorted(got) == sorted(
        [f"shard.tar/{k}" for k, _, _ in PAIRS] + [f"shard.parquet#{i}" for i in range(3)]
    )
    np.testing.assert_array_equal(got["shard.tar/002"]["image"], got["shard.parquet#2"]["image"])
    assert got["shard.parquet#2"]["caption"].decode() == "third one"


def test_tar_members_are_never_extracted_and_links_are_ignored(tmp_path, monkeypatch):
    """A member named `../x` or `/abs/x` is only a key: reading writes nothing anywhere (not
    beside the tar, not in the current directory, not at the absolute path), and symlinks,
    hard links, devices and folders are passed over."""
    data = tmp_path / "data"
    data.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = tmp_path / "abs"  # what an extraction by name would create
    samples = [("../evil", _image(0), "up one"), (f"{target}/evil", _image(1), "absolute")]
    _tar(
        data / "shard.tar",
        samples,
        extra=[
            ("link.png", b"", tarfile.SYMTYPE, "/etc/passwd"),
            ("hard.png", b"", tarfile.LNKTYPE, "../evil.png"),
            ("dev.png", b"", tarfile.CHRTYPE),
            ("folder", b"", tarfile.DIRTYPE),
            ("fifo.txt", b"", tarfile.FIFOTYPE),
        ],
    )
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    got, tally = _pairs([data / "shard.tar"])
    assert [(i, c) for i, _, c in got] == [
        ("shard.tar/../evil", "up one"),
        (f"shard.tar/{target}/evil", "absolute"),
    ]
    assert tally.seen == 2 and tally.skipped == 0
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert os.listdir(cwd) == [] and not target.exists() and not (tmp_path / "evil.png").exists()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 2 x 2 PNG whose header claims width x height (CRC fixed): a decompression bomb's
    header, a few dozen bytes."""
    data = bytearray(_image(0))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_a_decompression_bomb_is_a_bad_record_not_an_allocation():
    for side in (100_000, 10_000):  # over Pillow's hard limit; over ours (and Pillow's warning)
        with pytest.raises(
            images.ImageError,
            match=r"bomb.png: .*over the (pixel )?limit.*not decoded.*; a decompression bomb\?",
        ):
            images.rgb_bytes(_bomb_png(side, side), record_id="bomb.png")
    small = _image(0)  # 6 x 5 = 30 pixels: fine by default, a bad record over a limit of 29
    assert images.rgb_bytes(small, "ok.png") == small
    with pytest.raises(
        images.ImageError,
        match=r"^s.png: 5 x 6 image \(30 pixels\) over the limit of 29 \(images.max_pixels\)",
    ):
        images.rgb_bytes(small, "s.png", max_pixels=29)


def _tar_with_bad_image(p):
    _tar(p, [PAIRS[0], ("001", b"\xff\xd8\xff\xe0 not a jpeg", "broken"), PAIRS[2]])


def _tar_with_bomb(p):
    _tar(p, [PAIRS[0], ("001", _bomb_png(100_000, 100_000), "bomb"), PAIRS[2]])


def _tar_truncated(p):
    _tar(p)
    data = p.read_bytes()
    p.write_bytes(data[: data.index(PAIRS[2][1]) + 20])  # inside 002.png's data


def _tar_without_caption(p):
    _tar(p, [PAIRS[0]], extra=[("001.png", PAIRS[1][1])])


def _parquet_with_bad_image(p):
    _img2dataset_parquet(p, [PAIRS[0], ("001", b"GIF89a...", "not an image"), PAIRS[2]])


@pytest.mark.parametrize(
    "name, make, record, kw",
    [
        (
            "bad.tar",
            _tar_with_bad_image,
            r": member '001.jpg': not a recognized image format "
            r"\(corrupt or unsupported data, .*\)",
            {},
        ),
        (
            "bomb.tar",
            _tar_with_bomb,
            r": member '001.png': image over the pixel limit, not decoded \(.*\); "
            r"a decompression bomb\?",
            {},
        ),
        (
            "small.tar",
            lambda p: _tar(p),
            r": member '002.png': 5 x 8 image \(40 pixels\) over the limit of 39 "
            r"\(images.max_pixels\), not decoded; a decompression bomb\?",
            {"max_pixels": 39},
        ),
        (
            "cut.tar",
            _tar_truncated,
            r": after member '002.png': truncated or corrupt tar data \(.*\); "
            r"expected a complete tar file \(a webdataset shard\)",
            {},
        ),
        (
            "nocap.tar",
            _tar_without_caption,
            r": sample '001': expected one image \(001.jpg, .jpeg, .png or .webp\) and one "
            "001.txt; found 001.png",
            {},
        ),
        (
            "bad.parquet",
            _parquet_with_bad_image,
            r": row 1: not a recognized image format \(corrupt or unsupported data, .*\)",
            {},
        ),
    ],
)
def test_a_bad_image_text_record_is_one_line_or_skipped_and_counted(
    tmp_path, name, make, record, kw
):
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError) as e:
        _pairs([path], **kw)
    message = str(e.value)
    assert "\n" not in message and re.fullmatch(re.escape(str(path)) + record, message), message
    got, tally = _pairs([path], "skip", **kw)
    assert tally.skipped == 1 and tally.first == message
    assert len(got) >= 1 and all(c for _, _, c in got)


def test_parquet_columns_are_config_keys(tmp_path):
    path = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"image": [PAIRS[0][1]], "caption": ["x"]}), path)
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{path}: no column 'jpg' (columns: image, caption); set images.image_column"
        ),
    ):
        _pairs([path])
    got, _ = _pairs([path], image_column="image", caption_column="caption")
    assert [(i, c) for i, _, c in got] == [("renamed.parquet#0", "x")]


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_cut_jsonl_zst_corpus_ends_the_command_line_with_one_line(tmp_path):
    """Training on a .jsonl.zst corpus through the command line is README's example, run as
    written by tests/test_readme.py; here the same corpus with its last frame cut short ends
    the command before training, with one line naming the file and line."""
    plain = testing.write_kjv_jsonl(str(tmp_path / "kjv.jsonl"), 30)
    with open(plain, "rb") as f:
        whole = _zst(f.read())
    cut = tmp_path / "cut.jsonl.zst"  # the corpus, its second frame cut short
    cut.write_bytes(whole[:-100])
    argv = [
        sys.executable, "-m", "metalm_jax.train",
        "--config", f"{ROOT}/tests/micro_config.py:{cut},{tmp_path / 'tfds_cut'}",
        f"--workdir={tmp_path / 'run_cut'}",
        "--config.train.steps=2",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: {re.escape(str(cut))}:\d+: cannot read line \d+ or any after it: truncated or "
        r"corrupt data \(ZstdError: the data ends inside a frame \(truncated file\?\)\); "
        "expected a complete zstandard file",
        last,
    ), last


def test_the_vl_pipeline_reads_img2dataset_output_through_the_config_keys(tmp_path):
    """images.files (a glob over a .tar and a .parquet), images.max_pixels and
    data.on_bad_record reach LocalImageText through vl_pipeline: the one image over the limit
    in each file is skipped, the other four pairs split between train and validation."""
    from metalm_jax.data.feed import vl_pipeline

    _tar(tmp_path / "shard.tar")
    _img2dataset_parquet(tmp_path / "shard.parquet")
    cfg = testing.micro_vl_config(data_dir=str(tmp_path / "tfds"))
    cfg.images.name, cfg.images.files = "files", f"{tmp_path}/shard.*"
    cfg.images.validation_fraction = 0.5
    cfg.images.max_pixels = 39  # 002 is 5 x 8
    cfg.data.on_bad_record = "skip"
    train, val = vl_pipeline.image_split(cfg, "train"), vl_pipeline.image_split(cfg, "validation")
    ids = {src[i]["id"].decode() for src in (train, val) for i in range(len(src))}
    assert ids == {"shard.tar/000", "shard.tar/001", "shard.parquet#0", "shard.parquet#1"}
