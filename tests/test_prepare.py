"""Prepared data (data/feed/prepare.py, data/feed/prepared.py, data/pretrain/prepared_rows.py and
the prepare command): shards, ledger and manifest; a rerun keeps finished shards; every text
format; rows equal to the TFDS-fed packing of the same documents; training's row order a pure
function of (seed, step, process, process count); a manifest that does not match the config
refused in one line."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from metalm_jax import testing
from metalm_jax.data.corpora import documents, sources
from metalm_jax.data.corpora.text import decode_example, load_split, make_builder
from metalm_jax.data.feed import pipeline, prepare, prepared
from metalm_jax.data.pretrain import prepared_rows
from metalm_jax.data.pretrain.packed_rows import PackedRows
from metalm_jax.model.build import derive
from metalm_jax.types import ConfigError, DataError
from tests._procs import children, wait_gone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(corpus_cfg, tok, files, out, **data):
    """The corpus fixture's config on `files`, its tokenizer named, prepared into `out`."""
    cfg = corpus_cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.data.files = [str(f) for f in files]
        cfg.data.tokenizer_path = tok.source
        cfg.data.prepared_dir = str(out)
        for k, v in data.items():
            cfg.data[k] = v
    return cfg


def _quiet(line):
    del line


@pytest.fixture(scope="module")
def prepared_kjv(corpus, tmp_path_factory):
    """The corpus fixture's 60 KJV chapters prepared (one worker): (cfg, tok, manifest)."""
    cfg, tok = corpus
    out = tmp_path_factory.mktemp("prepared") / "out"
    cfg = _config(cfg, tok, cfg.data.files, out)
    manifest = prepare.prepare(cfg, log=_quiet)
    return cfg, tok, manifest


def test_the_manifest_counts_rows_tokens_documents_and_names_the_tokenizer(prepared_kjv):
    cfg, tok, m = prepared_kjv
    out = cfg.data.prepared_dir
    assert m["splits"]["train"]["documents"] + m["splits"]["validation"]["documents"] == 60
    for split in ("train", "validation"):
        rows = prepared.read_rows(out, m, split)
        assert len(rows) == m["splits"][split]["rows"] > 0
        assert sum(int((r["segment_ids"] > 0).sum()) for r in rows) == m["splits"][split]["tokens"]
    assert m["tokenizer"]["vocab_size"] == tok.vocab_size == cfg.data.vocab_size
    got = prepared.sha256(os.path.join(out, m["tokenizer"]["file"]))
    assert got == m["tokenizer"]["sha256"] == prepared.sha256(tok.source)
    assert m["config"]["data.seq_len"] == cfg.data.seq_len
    assert m["config"]["data.open_documents"] == cfg.data.open_documents
    assert m["bad_records_skipped"] == 0


def test_rows_equal_the_packing_of_the_same_documents(prepared_kjv, corpus):
    """The TFDS-fed pipeline's own documents (the corpus fixture's builder, same split rule),
    packed as today: validation as eval_batches packs it (one open document, file order), train
    with data.open_documents open and the shard's seed (0, one shard) in file order. Training
    differs only in shuffling documents before packing; prepared data shuffles rows instead."""
    cfg, tok, m = prepared_kjv
    builder = make_builder(corpus[0].data, corpus[0].data.tfds_data_dir)
    for split, open_docs in (("validation", 1), ("train", cfg.data.open_documents)):
        src = load_split(builder, split)
        docs = [tok.encode_document(decode_example(src[i])) for i in range(len(src))]
        ids = [src[i]["id"].decode() for i in range(len(src))]
        order = sorted(range(len(ids)), key=lambda i: int(ids[i].rsplit(":", 1)[1]))
        import grain

        docs_ds = grain.MapDataset.source([docs[i] for i in order])
        want = list(PackedRows(docs_ds, cfg.data.seq_len, tok.ids, open_docs=open_docs, seed=0))
        got = prepared.read_rows(cfg.data.prepared_dir, m, split)
        assert len(got) == len(want), split
        for a, b in zip(got, want, strict=True):
            for k in ("tokens", "segment_ids", "positions"):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{split} {k}")


def test_a_record_round_trips_and_a_damaged_one_is_named():
    row = testing.random_rows(1, 64, 70000, seed=3, docs_per_row=3)[0]
    row["segment_ids"][-5:] = 0  # padding at the end: positions 0 there
    row["positions"][-5:] = 0
    data = prepared_rows.encode_row(row)
    assert len(data) == 10 + 64 * 4 + 64  # int32 tokens (vocab > 65536), uint8 segment ids
    back = prepared_rows.decode_row(data)
    for k in row:
        np.testing.assert_array_equal(back[k], row[k])
    small = dict(row, tokens=row["tokens"] % 1000)
    assert len(prepared_rows.encode_row(small)) == 10 + 64 * 3  # uint16 tokens
    with pytest.raises(DataError, match="shard 7 row 3: a damaged prepared row"):
        prepared_rows.decode_row(data[:-1], "shard 7 row 3")


def test_an_epoch_reads_every_row_once_and_epochs_differ():
    n = 37
    first = [prepared_rows.global_row(5, g, n) for g in range(n)]
    second = [prepared_rows.global_row(5, g, n) for g in range(n, 2 * n)]
    assert sorted(r for _, r in first) == list(range(n)) == sorted(r for _, r in second)
    assert {e for e, _ in first} == {0} and {e for e, _ in second} == {1}
    assert [r for _, r in first] != [r for _, r in second]
    assert [r for _, r in first] != [prepared_rows.global_row(6, g, n)[1] for g in range(n)]


def test_batches_of_one_process_equal_those_assembled_from_two(prepared_kjv):
    """The order is a pure function of (seed, step, process, count): steps 0..5 (past one epoch
    of the validation-sized source, so epochs turn over) with P=1 equal the two halves of P=2,
    spans included; the iterator seeks to any step and its state is the step."""
    cfg, tok, _ = prepared_kjv
    fmt = derive(cfg, tok).rows
    one = pipeline.prepared_batches(cfg, tok, 8, fmt, (0, 1))
    halves = [pipeline.prepared_batches(cfg, tok, 4, fmt, (p, 2)) for p in range(2)]
    steps = list(range(6)) + [1000]
    for s in steps:
        whole = one[s]
        for k, v in whole.items():
            joined = np.concatenate([halves[0][s][k], halves[1][s][k]])
            np.testing.assert_array_equal(v, joined, err_msg=f"step {s} {k}")
    assert not np.array_equal(one[0]["tokens"], one[1]["tokens"])
    it = prepared_rows.StepIterator(one)
    it.seek(3)
    np.testing.assert_array_equal(next(it)["tokens"], one[3]["tokens"])
    assert it.get_state() == {"step": 4}
    it.set_state({"step": 1})
    np.testing.assert_array_equal(next(it)["targets"], one[1]["targets"])


def test_eval_rows_are_the_validation_rows_in_order_with_fixed_spans(prepared_kjv):
    cfg, tok, m = prepared_kjv
    fmt = derive(cfg, tok).rows
    a = pipeline.eval_batches(cfg, tok, 4, 2, fmt)
    b = pipeline.eval_batches(cfg, tok, 4, 2, fmt)
    rows = prepared.read_rows(cfg.data.prepared_dir, m, "validation")
    assert len(a) == 2
    for k in ("tokens", "segment_ids", "positions"):
        np.testing.assert_array_equal(a[0][k], np.stack([r[k] for r in rows[:4]]))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["slot_index"], y["slot_index"])


def test_a_manifest_that_does_not_match_is_refused_naming_the_key(prepared_kjv, tmp_path):
    cfg, tok, m = prepared_kjv
    for key, value in (("seq_len", 128), ("open_documents", 8), ("validation_fraction", 0.5)):
        other = cfg.copy_and_resolve_references()
        with other.unlocked():
            other.data[key] = value
        with pytest.raises(ConfigError, match=f"prepared with data.{key}=.*this config has"):
            prepared.check_manifest(other, tok, m)
    fake = tmp_path / "tokenizer.model"
    fake.write_bytes(open(tok.source, "rb").read() + b"x")
    other_tok = type("T", (), {"source": str(fake)})()
    with pytest.raises(ConfigError, match="the run's tokenizer .* is not the one"):
        prepared.check_manifest(cfg, other_tok, m)
    # preparing into the same directory with another setting is refused too
    other = cfg.copy_and_resolve_references()
    with other.unlocked():
        other.data.seq_len = 128
    with pytest.raises(ConfigError, match="holds data prepared with data.seq_len=64"):
        prepare.prepare(other, log=_quiet)
    missing = cfg.copy_and_resolve_references()
    with missing.unlocked():
        missing.data.prepared_dir = str(tmp_path / "none")
    with pytest.raises(DataError, match="no manifest.json"):
        pipeline.eval_batches(missing, tok, 4, 1, derive(cfg, tok).rows)


def test_the_same_files_named_otherwise_are_the_same_corpus(corpus, tmp_path, monkeypatch):
    """data.files is compared as the files it names: a glob or a relative path for the files
    the rows were prepared from is accepted, by training and by a rerun of prepare; a glob that
    now names one file more is refused, naming the key."""
    cfg, tok = corpus
    files = [testing.write_kjv_jsonl(str(tmp_path / n), 20) for n in ("a.jsonl", "b.jsonl")]
    cfg = _config(cfg, tok, files, tmp_path / "out")
    m = prepare.prepare(cfg, log=_quiet)
    assert m["config"][prepared.FILES_RESOLVED] == files
    monkeypatch.chdir(tmp_path)
    for typed in ([str(tmp_path / "*.jsonl")], ["a.jsonl", "b.jsonl"]):
        other = cfg.copy_and_resolve_references()
        with other.unlocked():
            other.data.files = typed
        prepared.check_manifest(other, tok, m)  # accepted
        lines = []
        prepare.prepare(other, log=lines.append)  # the plan is the same: nothing to do
        assert "2 done before, 0 to do" in lines[0], lines
    testing.write_kjv_jsonl(str(tmp_path / "c.jsonl"), 20)
    with other.unlocked():
        other.data.files = [str(tmp_path / "*.jsonl")]
    with pytest.raises(ConfigError, match="prepared with data.files=.*this config has"):
        prepared.check_manifest(other, tok, m)
    # a manifest without the record (prepared before it existed): the typed value decides
    del m["config"][prepared.FILES_RESOLVED]
    with other.unlocked():
        other.data.files = ["a.jsonl", "b.jsonl"]
    with pytest.raises(ConfigError, match="prepared with data.files="):
        prepared.check_manifest(other, tok, m)


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _corpus(folder, suffix: str, docs) -> str:
    """`docs` (paragraphs) as one .txt document, or as 20 JSONL / Parquet documents of two."""
    path = os.path.join(folder, "c" + suffix)
    pairs = ["\n".join(docs[i : i + 2]) for i in range(0, 40, 2)]
    if suffix == ".txt":  # one document a file: blank-line paragraphs
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs))
    elif suffix == ".parquet":
        pq.write_table(pa.table({"text": pairs}), path, row_group_size=4)
    else:
        lines = "".join(json.dumps({"text": p}) + "\n" for p in pairs)
        with open(path, "wb") as f:
            f.write(_zst(lines.encode()))
    return path


@pytest.mark.parametrize("suffix", [".txt", ".jsonl.zst", ".parquet"])
def test_every_text_format_through_prepare(corpus, tmp_path, suffix):
    cfg, tok = corpus
    verses = [v for _, vs in testing.kjv_chapters()[:3] for v in vs][:40]
    path = _corpus(tmp_path, suffix, verses)
    files = [path, testing.write_kjv_jsonl(str(tmp_path / "kjv.jsonl"), 8)]  # holds validation
    cfg = _config(cfg, tok, files, tmp_path / "out", validation_fraction=0.3)
    m = prepare.prepare(cfg, log=_quiet)
    rows = prepared.read_rows(cfg.data.prepared_dir, m, "train") + prepared.read_rows(
        cfg.data.prepared_dir, m, "validation"
    )
    text = " ".join(tok.decode(r["tokens"][r["segment_ids"] > 0]) for r in rows)
    for verse in verses[::7]:  # a verse's start (a row may cut a long verse)
        assert " ".join(verse.split()[:6]) in text, verse
    n_docs = {".txt": 1, ".jsonl.zst": 20, ".parquet": 20}[suffix] + 8
    assert sum(m["splits"][s]["documents"] for s in ("train", "validation")) == n_docs


def test_a_rerun_skips_the_shards_in_the_ledger(corpus, tmp_path):
    """A killed run (simulated: the manifest and one shard's ledger entry gone, a temporary
    file left over) prepares only that shard again; the other shards' files are not touched."""
    cfg, tok = corpus
    files = [testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 40)]
    cfg = _config(cfg, tok, files, tmp_path / "out")
    lines = []
    first = prepare.prepare(cfg, shard_mb=0.02, block=8, log=lines.append)
    out = tmp_path / "out"
    assert first["shards"] >= 3, first
    shards = sorted(out.glob("train-*.array_record"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    os.remove(out / "manifest.json")
    os.remove(out / "ledger" / "00001.json")
    (out / "train-00001.array_record.tmp-999").write_bytes(b"half")
    lines.clear()
    again = prepare.prepare(cfg, shard_mb=0.02, block=8, log=lines.append)
    assert f"has {first['shards']}, {first['shards'] - 1} done before, 1 to do" in lines[0], lines
    assert again["splits"] == first["splits"]
    for p in shards:
        same = p.stat().st_mtime_ns == stamps[p.name]
        assert same == (p.name != "train-00001.array_record"), p.name
    assert not list(out.glob("*.tmp-*"))
    assert any("rows/s, ETA" in line for line in lines), lines


def test_parts_of_a_job_array_write_the_manifest_when_the_last_is_done(corpus, tmp_path):
    cfg, tok = corpus
    files = [testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 40)]
    cfg = _config(cfg, tok, files, tmp_path / "out")
    lines = []
    assert prepare.prepare(cfg, part=(1, 2), shard_mb=0.02, block=8, log=lines.append) is None
    assert any("not prepared yet (other parts)" in line for line in lines), lines
    m = prepare.prepare(cfg, part=(0, 2), shard_mb=0.02, block=8, log=_quiet)
    whole_cfg = _config(cfg, tok, files, tmp_path / "whole")
    whole = prepare.prepare(whole_cfg, shard_mb=0.02, block=8, log=_quiet)
    assert m["splits"] == whole["splits"]


def test_bad_records_stop_naming_the_file_or_are_counted_into_the_manifest(corpus, tmp_path):
    cfg, tok = corpus
    good = testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 12)
    bad = tmp_path / "b.jsonl.zst"
    bad.write_bytes(_zst(b'{"text": "fine words here"}\n["not an object"]\n')[:-3])  # truncated
    cfg = _config(cfg, tok, [good, str(bad)], tmp_path / "out", validation_fraction=0.5)
    with pytest.raises(DataError, match=f"{bad}:2: cannot read line 2 or any after it"):
        prepare.prepare(cfg, log=_quiet)
    with cfg.unlocked():
        cfg.data.on_bad_record = "skip"
    lines = []
    m = prepare.prepare(cfg, log=lines.append)
    assert m["bad_records_skipped"] == 1 and str(bad) in m["first_bad_record"]
    assert any("skipped 1 bad record" in line for line in lines), lines


def _command(cfg, tok, files) -> list[str]:
    """`python -m metalm_jax.prepare` on configs/tiny.py with the corpus fixture's data keys."""
    keys = {
        "name": "files",
        "seq_len": 64,
        "vocab_size": cfg.data.vocab_size,
        "validation_fraction": 0.2,
        "tokenizer_path": tok.source,
        "files": ",".join(files),
    }
    argv = [sys.executable, "-m", "metalm_jax.prepare", "--config", "configs/tiny.py"]
    return argv + [f"--config.data.{k}={v}" for k, v in keys.items()]


@pytest.mark.slow
def test_two_worker_processes_and_the_command_line(corpus, tmp_path):
    """`python -m metalm_jax.prepare --workers 2`: the same rows as one worker in-process; a
    config error is one `error:` line."""
    cfg, tok = corpus
    files = [testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 40)]
    files.append(testing.write_kjv_jsonl(str(tmp_path / "b.jsonl"), 20))
    one = prepare.prepare(_config(cfg, tok, files, tmp_path / "one"), log=_quiet)
    argv = _command(cfg, tok, files)
    run = lambda *extra: subprocess.run(
        [*argv, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    out = run("--out", str(tmp_path / "two"), "--workers", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 worker(s)" in out.stdout and "rows/s, ETA" in out.stdout, out.stdout
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert two["splits"] == one["splits"]
    for split in ("train", "validation"):
        a = prepared.read_rows(str(tmp_path / "one"), one, split)
        b = prepared.read_rows(str(tmp_path / "two"), two, split)
        assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, b, strict=True))
    bad = run("--out", str(tmp_path / "two"), "--config.data.seq_len=128")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'two'} holds data prepared with data.seq_len=64; this run "
        "has 128: use another --out, or the settings it was prepared with"
    ], bad.stderr


def test_shards_split_big_files_by_blocks_of_documents(tmp_path):
    path = testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 40)
    shards = prepare.plan_shards([path], shard_mb=0.02, block=4)
    assert len(shards) == -(-os.path.getsize(path) // int(0.02 * 2**20))
    names = [f"a.jsonl:{n}" for n in range(1, 41)]
    owners = [[s.index for s in shards if s.wanted(name)] for name in names]
    assert all(len(o) == 1 for o in owners)  # every document in exactly one shard
    assert owners[2] == owners[0] and owners[3] != owners[2]  # lines 1-3 | 4-7: n // 4
    read = lambda s: documents.read_documents([s.path], "text", sources.Tally(), s.wanted)
    got = [doc_id for s in shards for doc_id, _ in read(s)]
    assert sorted(got) == sorted(names)
    table = tmp_path / "a:b.parquet"  # row ids `a:b.parquet#row`: the row is after the #
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(40)]}), table, row_group_size=8)
    shards = prepare.plan_shards([str(table)], shard_mb=os.path.getsize(table) / 2**21, block=4)
    assert len(shards) == 2
    got = [doc_id for s in shards for doc_id, _ in read(s)]
    assert sorted(got) == sorted(f"a:b.parquet#{i}" for i in range(40))
    assert [d for d, _ in read(shards[1])][:4] == [f"a:b.parquet#{i}" for i in range(4, 8)]


@pytest.mark.slow
def test_training_reads_prepared_rows_and_resumes_at_the_step(prepared_kjv, tmp_path, capsys):
    """Two steps on prepared rows, then the same run to four: the resumed iterator is put at the
    restored step (the data position saved at step 4 is step 4, not 2 steps from a fresh
    start), and the tokenizer the run keeps in its workdir is the prepared one."""
    from metalm_jax.loop import train_and_evaluate

    cfg, tok, m = prepared_kjv
    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.data.tokenizer_path = ""  # the prepared directory's tokenizer
        cfg.train.steps, cfg.train.checkpoint_every, cfg.train.sample_tokens = 2, 2, 0
    workdir = tmp_path / "run"
    train_and_evaluate(cfg, str(workdir))
    assert prepared.sha256(workdir / "tokenizer.model") == m["tokenizer"]["sha256"]
    with cfg.unlocked():
        cfg.train.steps = 4
    capsys.readouterr()
    train_and_evaluate(cfg, str(workdir))
    out = capsys.readouterr().out
    assert "resumed from" in out and "re-sharded" not in out, out
    saved = workdir / "checkpoints" / "4" / "data" / "process_0-of-1.json"
    assert json.loads(saved.read_text()) == {"step": 4}


def test_an_object_store_output_is_written_locally_then_copied(corpus, tmp_path, monkeypatch):
    """The gs:// branch, on a local folder that is treated as remote: every shard is written
    in a local temporary folder and copied whole; nothing but finished files reaches `out`.
    (A real bucket is not reachable offline.)"""
    cfg, tok = corpus
    out = tmp_path / "bucket"
    files = [testing.write_kjv_jsonl(str(tmp_path / "a.jsonl"), 40)]
    cfg = _config(cfg, tok, files, out)
    copied = []
    real_copy = prepare.paths.copy_file

    def copy(src, dst):
        copied.append((str(src), str(dst)))
        real_copy(src, dst)

    monkeypatch.setattr(prepare.paths, "is_remote", lambda p: str(p).startswith(str(out)))
    monkeypatch.setattr(prepare.paths, "copy_file", copy)
    m = prepare.prepare(cfg, log=_quiet)
    shard_copies = [(s, d) for s, d in copied if d.endswith(".array_record")]
    assert {os.path.basename(d) for _, d in shard_copies} == {
        name for split in ("train", "validation") for name, _ in m["splits"][split]["files"]
    }
    assert all(not s.startswith(str(out)) and not os.path.exists(s) for s, _ in shard_copies)
    monkeypatch.undo()
    assert len(prepared.read_rows(str(out), m, "train")) == m["splits"]["train"]["rows"]


@pytest.mark.slow
def test_a_killed_prepare_keeps_its_finished_shards(corpus, tmp_path):
    """The command killed (SIGKILL) once two shards are in the ledger: the rerun prepares only
    the rest, and the result equals a run that was never interrupted."""
    cfg, tok = corpus
    files = [testing.write_kjv_jsonl(str(tmp_path / f"p{i:02d}.jsonl"), 60) for i in range(12)]
    clean = prepare.prepare(_config(cfg, tok, files, tmp_path / "clean"), log=_quiet)
    out = tmp_path / "out"
    argv = _command(cfg, tok, files) + ["--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = {}
    try:
        while proc.poll() is None and len(list((out / "ledger").glob("*.json"))) < 2:
            started.update(children(proc.pid))
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.communicate()
    assert any("spawn_main" in cmd for cmd in started.values()), started  # its workers
    assert wait_gone(list(started)) == [], started  # none outlives the killed command
    done = len(list((out / "ledger").glob("*.json")))
    assert 2 <= done < 12 and not (out / "manifest.json").exists(), done
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"has 12, {done} done before, {12 - done} to do" in again.stdout, again.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["splits"] == clean["splits"]
    for split in ("train", "validation"):
        a = prepared.read_rows(str(out), m, split)
        b = prepared.read_rows(str(tmp_path / "clean"), clean, split)
        assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_a_resume_by_two_processes_continues_the_same_rows(prepared_kjv, tmp_path):
    """Four steps on prepared rows by one process of two devices and two data worker processes
    (checkpoints at 2 and 4), and the same run resumed at step 2 by two processes of one device
    and no workers: steps 3 and 4 train on the
    same global batches, so their losses agree, and each process's saved position is the step
    (the TFDS-fed data would start afresh here: tests/test_elastic.py)."""
    from tests._procs import cpu_env, run_processes

    cfg, _, _ = prepared_kjv
    config = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    one = tmp_path / "one"
    argv = [sys.executable, "-m", "metalm_jax.train", "--config", config, f"--workdir={one}"]
    argv += [f"--config.data.prepared_dir={cfg.data.prepared_dir}"]
    argv += [f"--config.train.{k}" for k in ("steps=4", "batch_size=8", "checkpoint_every=2")]
    argv += [f"--config.train.{k}" for k in ("log_every=1", "eval_every=0", "sample_tokens=0")]
    proc = subprocess.run(  # the data built by two worker processes
        [*argv, "--config.data.workers=2"],
        capture_output=True,
        text=True,
        env=cpu_env(2),
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = lambda run: {
        r["step"]: r["train/loss"]
        for r in map(json.loads, open(run / "metrics.jsonl", encoding="utf-8"))
        if "train/loss" in r
    }
    want = losses(one)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    argv = [a.replace(f"--workdir={one}", f"--workdir={two}") for a in argv]
    outs = run_processes([*argv, "--config.train.restore_step=2"], 2, 1)
    assert f"== resumed from {two}/checkpoints/2\n" in outs[0], outs[0][-3000:]
    assert not any("re-sharded" in out for out in outs)
    got = losses(two)
    for step in (3, 4):
        assert got[step] == pytest.approx(want[step], rel=1e-5), (step, got, want)
    data = two / "checkpoints" / "4" / "data"
    positions = {p.name: json.loads(p.read_text()) for p in data.glob("process_*.json")}
    assert positions == {f"process_{i}-of-2.json": {"step": 4} for i in range(2)}


def test_worker_processes_give_the_same_batches_at_any_step(prepared_kjv):
    """data.workers: two worker processes (grain's mp_prefetch) yield the batches of the
    in-process iterator, in step order, after a seek too; closing stops them."""
    import multiprocessing

    cfg, tok, _ = prepared_kjv
    fmt = derive(cfg, tok).rows
    batches = pipeline.prepared_batches(cfg, tok, 8, fmt, (0, 1))
    it = prepared_rows.StepIterator(batches, workers=2)
    for s in range(3):
        got = next(it)
        for k, v in batches[s].items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"step {s} {k}")
    workers = [p.pid for p in multiprocessing.active_children()]
    assert len(workers) == 2, workers
    it.seek(7)  # a resume at step 7: the data position is the step, whatever the worker count
    np.testing.assert_array_equal(next(it)["tokens"], batches[7]["tokens"])
    assert it.get_state() == {"step": 8}
    it.close()
    assert wait_gone(workers) == []


_KILLED_PARENT = """
import multiprocessing, sys
import numpy as np
from metalm_jax.data.feed import prepared
from metalm_jax.data.pretrain.prepared_rows import ProcessShare, StepIterator
out = sys.argv[1]
src = prepared.split_source(out, prepared.read_manifest(out), "train")
ds = ProcessShare(src, 0, 4, 0, 1).map(lambda item: {"row": np.asarray(item[1])}).batch(4)
it = StepIterator(ds, workers=2)
next(it), next(it)  # a batch from each worker: both are started
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
sys.stdin.read()
"""


def test_no_worker_outlives_a_killed_parent(prepared_kjv):
    """A process reading with two workers killed by SIGKILL (no clean-up runs): its workers see
    their parent gone and exit (prepared_rows._exit_with_parent) instead of orphaning."""
    cfg, _, _ = prepared_kjv
    script = "if __name__ == '__main__':\n" + "\n".join(
        "    " + line for line in _KILLED_PARENT.strip().splitlines()
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(cfg.data.prepared_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.kill()
        proc.wait()
    assert len(workers) == 2, workers
    assert wait_gone(workers) == []


def test_worker_processes_need_prepared_rows(corpus):
    """The TFDS-fed pipeline packs in a stateful iterator that grain cannot slice across
    workers: data.workers > 0 without data.prepared_dir is refused, naming both keys."""
    cfg, tok = corpus
    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.data.workers = 2
    with pytest.raises(ConfigError, match=r"data.workers=2: .*data.prepared_dir"):
        pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    assert prepared_rows.auto_workers(2) == 0 and prepared_rows.auto_workers(208) == 16


def test_a_vocabulary_the_text_cannot_fill_is_named():
    """SentencePiece's 'Vocabulary size too high' comes out as one ConfigError naming
    data.vocab_size and the most the text allows (prepare and train both train through it)."""
    from metalm_jax.data import tokenizer as toklib

    texts = ["In the beginning God created the heaven and the earth."] * 20
    with pytest.raises(ConfigError, match=r"data.vocab_size=5000: .* at most \d+ SentencePiece"):
        toklib.train_tokenizer(iter(texts), 5000)
