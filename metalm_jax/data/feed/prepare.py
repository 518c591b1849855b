"""Preparing a text corpus once: ArrayRecord shards of packed decoder rows, a ledger, a manifest.

`python -m metalm_jax.prepare` (metalm_jax/prepare.py: flags only) runs `prepare`; training
reads the result when `data.prepared_dir` names it (prepared.py, pipeline.py). The output
directory (local, or gs://: shards are written locally and copied):

    tokenizer.model        the run's tokenizer (data.tokenizer_path copied, or SentencePiece
                           trained on a bounded sample of the train documents); or tokenizer.json
    plan.json              the input shards and every setting that decides the rows; a rerun
                           with other settings is refused (a key named), so shards never mix
    train-00003.array_record, validation-00003.array_record
                           the rows of input shard 3 (records: pretrain/prepared_rows.py)
    ledger/00003.json      written after shard 3's files are complete: its counts. A rerun
                           (after a crash, a kill, or a `--part` of a job array) skips every
                           shard with an entry; files without one are written again
    manifest.json          when every shard has its entry: rows / tokens / documents per split,
                           the shard files in order, bad records skipped, the tokenizer's
                           SHA-256 and the data keys (what prepared.check_manifest checks)

Input shards: each corpus file, and a .jsonl / Parquet file larger than `shard_mb` in parts
(part k of m: the documents whose line or row number n has (n // 64) % m == k; every part
streams the file and parses only its own records). A shard's documents go to `validation` when
their id hashes below data.validation_fraction (as the TFDS builder does), else to `train`.
Rows: a shard's train documents (tokenized as in training: `encode_document`) packed by
PackedRows with data.open_documents documents open (so a long document's rows are spread out),
its draws seeded by the shard's index; its validation documents with one open, in file order.
The rows differ from a TFDS-fed run's in one respect only: training shuffles documents before
packing, prepared data packs them in file order and shuffles the rows (prepared_rows.py).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
import time

import grain
import numpy as np
from etils import epath

from metalm_jax import paths
from metalm_jax.data import images as imlib
from metalm_jax.data import tokenizer as toklib
from metalm_jax.data.corpora import documents, pairs, sources
from metalm_jax.data.feed.prepared import (
    CHECKED_KEYS,
    FILES_RESOLVED,
    FORMAT,
    IMAGE_FILES_RESOLVED,
    IMAGE_KEYS,
    IMAGE_SPLIT,
    SPLITS,
    data_keys,
    read_json,
    sha256,
    shard_file,
    tokenizer_in,
)
from metalm_jax.data.feed.prepared import path as _path
from metalm_jax.data.pretrain.packed_rows import PackedRows
from metalm_jax.data.pretrain.prepared_rows import encode_pairs, encode_row, exit_with_parent
from metalm_jax.data.pretrain.vl_rows import PairPacker
from metalm_jax.data.rows import ImageLayout
from metalm_jax.types import ConfigError, DataError

BLOCK = 64  # documents in a row that go to one part of a file (parts take turns)
TOKENIZER_SAMPLE_CHARS = 200 * 2**20  # text a new SentencePiece is trained on, at most
WRITER_OPTIONS = "group_size:1,zstd:3"  # one record a chunk: random access reads one row


@dataclasses.dataclass(frozen=True)
class Shard:
    """One unit of work: part `part` of `parts` of corpus file `path`."""

    index: int
    path: str
    part: int
    parts: int
    weight: int  # bytes of input, for the progress line's ETA
    block: int = BLOCK
    kind: str = "text"  # text (data.files) | images (images.files: image-text pairs)

    def wanted(self, record_id: str) -> bool:
        """Whether a document (id `name:line` or `name#row`, documents.py) is this part's."""
        if self.parts == 1:
            return True
        sep = "#" if documents.text_format(self.path) == "parquet" else ":"
        number = int(record_id.rsplit(sep, 1)[1])
        return (number // self.block) % self.parts == self.part


def plan_shards(files, shard_mb: float, block: int = BLOCK, image_files=()) -> list[Shard]:
    """The input shards of `files` (expanded paths), in file order; a part of a file holds
    every m-th run of `block` documents. Then one shard per image-text source in
    `image_files` (a webdataset .tar, a Parquet or JSONL file, a folder)."""
    out = []
    for path in files:
        size = sources.size(path)
        splittable = documents.text_format(path) in ("jsonl", "parquet") and shard_mb > 0
        parts = max(1, -(-size // int(shard_mb * 2**20))) if splittable else 1
        for k in range(parts):
            out.append(Shard(len(out), path, k, parts, size // parts, block))
    for path in image_files:
        size = sources.size(path) if pairs.pair_format(path) != "folder" else 2**20
        out.append(Shard(len(out), path, 0, 1, size, block, "images"))
    return out


# ---------------------------------------------------------------------------------------------
# The output directory


def _ledger(out: str, index: int) -> str:
    return _path(out, f"ledger/{index:05d}.json")


def _check_plan(out: str, plan: dict) -> None:
    """plan.json written, or compared with the one there (the first difference named)."""
    path = _path(out, "plan.json")
    old = read_json(path)
    if old is None:
        paths.write_atomic(path, json.dumps(plan, indent=1))
        return
    # data.files is compared through "shards" (every file as resolved, its parts and size), so
    # a glob or a relative path for the same files prepares on; a plan written before that
    # also holds data.files as typed, which is not compared
    for key in sorted((set(old) | set(plan)) - {"data.files"}):
        if old.get(key) != plan.get(key):
            what = "the input shards (data.files changed, or a file's size)"
            what = what if key == "shards" else f"{key}={old.get(key)!r}"
            now = "" if key == "shards" else f"; this run has {plan.get(key)!r}"
            raise ConfigError(
                f"--out {out} holds data prepared with {what}{now}: use another --out, or the "
                "settings it was prepared with"
            )


# ---------------------------------------------------------------------------------------------
# The tokenizer


def _sample_texts(files, text_key: str, validation_fraction: float, budget: int):
    """Paragraphs of the train documents, up to `budget` characters spread evenly over the
    files (each file from its start): the whole corpus when it is small."""
    per_file = max(1, budget // max(1, len(files)))
    for path in files:
        took = 0
        tally = sources.Tally("skip")  # bad records are met (and reported) by the shards
        for doc_id, paras in documents.read_documents([path], text_key, tally):
            if sources.hash_fraction(doc_id) < validation_fraction:
                continue
            for p in paras:
                if p.strip():
                    yield p
                    took += len(p)
            if took >= per_file:
                break


def _sample_captions(cfg, image_files, budget: int):
    """The captions of the image-text train pairs, up to `budget` characters."""
    im = cfg.images
    took = 0
    tally = sources.Tally("skip")
    read = pairs.read_pairs(
        image_files, tally, None, im.image_column, im.caption_column, int(im.max_pixels)
    )
    for record_id, _, caption in read:
        if sources.hash_fraction(record_id) < float(im.validation_fraction) or not caption:
            continue
        yield caption
        took += len(caption)
        if took >= budget:
            return


def prepare_tokenizer(cfg, out: str, files, part: tuple[int, int], log, image_files=()) -> str:
    """The tokenizer file in `out`: there already, data.tokenizer_path copied, or a SentencePiece
    trained on the train documents (part 0 only: the other parts of a job array need the one
    tokenizer it trains)."""
    d = cfg.data
    configured = toklib.configured_path(d.tokenizer_path, cfg.init)
    have = tokenizer_in(out)
    if configured:
        tok = toklib.open_tokenizer(configured)
        dst = _path(out, tok.saved_name)
        if have and sha256(have) != sha256(tok.source):
            raise ConfigError(
                f"data.tokenizer_path: {tok.source} differs from the tokenizer {have} the rows in "
                f"--out {out} were made with: use another --out"
            )
        if not have:
            paths.copy_file(tok.source, dst)
        return dst
    if have:
        return have
    if part[0] != 0:
        raise ConfigError(
            f"--part {part[0]}/{part[1]}: {out} has no tokenizer yet; part 0 trains it (or set "
            "data.tokenizer_path): run --part 0 first"
        )
    log(f"== training a SentencePiece tokenizer ({d.vocab_size} pieces) on the train documents")
    texts = _sample_texts(files, d.text_key, float(d.validation_fraction), TOKENIZER_SAMPLE_CHARS)
    if image_files:  # and the captions, as a TFDS-fed VL run's tokenizer reads them
        budget = TOKENIZER_SAMPLE_CHARS // 4
        texts = itertools.chain(texts, _sample_captions(cfg, image_files, budget))
    proto = toklib.train_tokenizer(texts, int(d.vocab_size))
    dst = _path(out, toklib.Tokenizer.saved_name)
    paths.write_atomic(dst, proto)
    return dst


# ---------------------------------------------------------------------------------------------
# One shard (runs in a worker process)


def _write_records(records, local_path: str) -> tuple[int, int]:
    """(record bytes, tokens) pairs written to an ArrayRecord file; (records, tokens)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    n = tokens = 0
    writer = ArrayRecordWriter(local_path, WRITER_OPTIONS)
    try:
        for record, count in records:
            writer.write(record)
            n += 1
            tokens += count
    finally:
        writer.close()
    return n, tokens


def _publish(local: str, out: str, name: str) -> None:
    """A finished local file moved (renamed, or copied for gs://) to its name in `out`."""
    dst = _path(out, name)
    if paths.is_remote(out):
        paths.copy_file(local, dst)
        os.remove(local)
    else:
        os.replace(local, dst)


REPORT_EVERY = 256  # rows or documents between two reports of a shard's progress


def _counting(rows, report):
    n = 0
    for row in rows:
        yield row
        n += 1
        if n % REPORT_EVERY == 0:
            report(REPORT_EVERY, 0)
    report(n % REPORT_EVERY, 0)


def prepare_shard(shard: Shard, settings: dict, out: str, report=lambda rows, docs: None) -> dict:
    """Reads, tokenizes, packs and writes one shard; writes its ledger entry; returns it.
    `report(rows, documents)` is told of the work as it goes (for the progress line)."""
    started = (time.perf_counter(), time.process_time())
    tok = toklib.open_tokenizer(settings["tokenizer"])
    tally = sources.Tally(settings["on_bad_record"])
    docs = {split: [] for split in SPLITS}
    read = documents.read_documents([shard.path], settings["text_key"], tally, shard.wanted)
    for n, (doc_id, paras) in enumerate(read, 1):
        held_out = sources.hash_fraction(doc_id) < settings["validation_fraction"]
        docs["validation" if held_out else "train"].append(tok.encode_document(paras))
        if n % REPORT_EVERY == 0:
            report(0, REPORT_EVERY)
    report(0, sum(map(len, docs.values())) % REPORT_EVERY)

    def records(split):
        rows = PackedRows(
            grain.MapDataset.source(docs[split]),
            settings["seq_len"],
            tok.ids,
            open_docs=settings["open_documents"] if split == "train" else 1,
            seed=shard.index,
        )
        return ((encode_row(r), int(np.count_nonzero(r["segment_ids"]))) for r in rows)

    entry = {"shard": shard.index, "path": shard.path, "part": [shard.part, shard.parts]}
    splits = [(split, shard_file(split, shard.index), docs[split], records) for split in SPLITS]
    return _write_shard(shard, out, entry, tally, started, splits, report)


def _write_shard(shard: Shard, out: str, entry: dict, tally, started, splits, report) -> dict:
    """A shard's files and ledger entry: for each (entry key, file name, items, records) of
    `splits`, `records(entry key)` ((record bytes, tokens) of the items' rows) written under a
    temporary name (locally for gs://) and published, its counts into `entry`; then the bad
    records, the time since `started`, and the ledger entry, which is returned."""
    entry["skipped"], entry["first_skipped"] = tally.skipped, tally.first
    local_dir = tempfile.mkdtemp(prefix="prepare-") if paths.is_remote(out) else out
    try:
        for key, name, items, records in splits:
            counts = {"rows": 0, "tokens": 0, "documents": len(items), "file": ""}
            if items:
                tmp = os.path.join(local_dir, f"{name}.tmp-{os.getpid()}")
                counts["rows"], counts["tokens"] = _write_records(
                    _counting(records(key), report), tmp
                )
                _publish(tmp, out, name)
                counts["file"] = name
            entry[key] = counts
    finally:
        if local_dir != out:
            shutil.rmtree(local_dir, ignore_errors=True)
    entry["seconds"] = _timed(started)
    paths.write_atomic(_ledger(out, shard.index), json.dumps(entry, indent=1))
    return entry


def prepare_image_shard(shard: Shard, settings: dict, out: str, report) -> dict:
    """One image-text source: every pair read (a bad one named, or skipped and counted), its
    image resized to the layout's resolution (shorter side) and stored as JPEG, its caption
    tokenized with </s>; the pairs of each split packed into rows in file order (PairPacker,
    as training packs them) and written; then its ledger entry."""
    started = (time.perf_counter(), time.process_time())
    tok = toklib.open_tokenizer(settings["tokenizer"])
    layout = ImageLayout(**settings["layout"])
    tally = sources.Tally(settings["on_bad_record"])
    held = {split: [] for split in SPLITS}
    read = pairs.read_pairs(
        [shard.path],
        tally,
        None,
        settings["image_column"],
        settings["caption_column"],
        settings["max_pixels"],
    )
    for n, (record_id, image, caption) in enumerate(read, 1):
        try:
            jpeg = imlib.resized_jpeg(image, layout.image_size, record_id)
        except imlib.ImageError as e:
            tally.bad(str(e), imlib.ImageError)
            continue
        held_out = sources.hash_fraction(record_id) < settings["image_validation_fraction"]
        ids = np.asarray(tok.encode(caption) + [tok.eos], np.int32)
        held["validation" if held_out else "train"].append((jpeg, ids))
        if n % REPORT_EVERY == 0:
            report(0, REPORT_EVERY)
    report(0, sum(map(len, held.values())) % REPORT_EVERY)
    entry = {"shard": shard.index, "path": shard.path, "part": [0, 1], "kind": "images"}
    split_of = {IMAGE_SPLIT[split]: split for split in SPLITS}
    records = lambda key: _pair_rows(held[split_of[key]], layout)
    splits = [
        (IMAGE_SPLIT[split], "images-" + shard_file(split, shard.index), held[split], records)
        for split in SPLITS
    ]
    return _write_shard(shard, out, entry, tally, started, splits, report)


def _pair_rows(items, layout: ImageLayout):
    """(record, caption tokens) of the rows PairPacker packs `items` (image, caption) into."""
    it = iter(items)
    packer = PairPacker(layout, lambda: next(it))
    while True:
        try:
            row = packer.next_rows_pairs()
        except StopIteration:
            return
        yield encode_pairs(row), sum(len(c) for _, c in row)


def _timed(started: tuple[float, float]) -> dict:
    """Wall and CPU seconds (this process: one worker) since `started`, for the ledger."""
    wall, cpu = started
    return {
        "wall": round(time.perf_counter() - wall, 3),
        "cpu": round(time.process_time() - cpu, 3),
    }


_progress = None  # a worker process's queue to the job's progress line (_init_worker)


def _init_worker(queue, parent: int) -> None:
    """Each worker process, as it starts: the progress queue, and an exit of its own when the
    job is killed outright (SIGKILL leaves no clean-up to stop the pool)."""
    global _progress
    _progress = queue
    exit_with_parent(parent)


def _worker(args) -> dict:
    shard, settings, out = args
    report = lambda r, d: _progress.put((r, d)) if r or d else None
    return _work(shard)(shard, settings, out, report)


def _work(shard: Shard):
    """The function that prepares `shard`, by its kind."""
    return prepare_image_shard if shard.kind == "images" else prepare_shard


# ---------------------------------------------------------------------------------------------
# The whole job


class Progress:
    """A line with rows/s and an ETA at least every `every` seconds (the ETA from the input
    bytes of the shards finished in this run)."""

    def __init__(self, shards: list[Shard], log, every: float = 5.0):
        self.total = sum(s.weight for s in shards) or 1
        self.todo = len(shards)
        self.log, self.every = log, every
        self.start = self.last = time.time()
        self.rows = self.docs = self.done = self.weight = 0

    def add(self, rows: int, docs: int) -> None:
        self.rows += rows
        self.docs += docs
        if time.time() - self.last >= self.every:
            self.line()

    def shard_done(self, shard: Shard) -> None:
        self.done += 1
        self.weight += shard.weight
        self.line()

    def line(self) -> None:
        self.last = time.time()
        dt = max(self.last - self.start, 1e-9)
        eta = "?"
        if self.weight:
            eta = _fmt_s(dt * (self.total - self.weight) / self.weight)
        self.log(
            f"prepare: {self.done}/{self.todo} shards, {self.docs:,} documents / image-text "
            f"pairs read, {self.rows:,} rows, {self.rows / dt:,.0f} rows/s, ETA {eta}"
        )


def _fmt_s(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _settings(cfg, tokenizer_file: str, layout: ImageLayout | None) -> dict:
    d, im = cfg.data, cfg.images
    settings = {
        "tokenizer": tokenizer_file,
        "on_bad_record": d.on_bad_record,
        "text_key": d.text_key,
        "validation_fraction": float(d.validation_fraction),
        "seq_len": int(d.seq_len),
        "open_documents": int(d.open_documents),
    }
    if layout is not None:
        settings["layout"] = dataclasses.asdict(layout)
        settings["image_validation_fraction"] = float(im.validation_fraction)
        settings["image_column"], settings["caption_column"] = im.image_column, im.caption_column
        settings["max_pixels"] = int(im.max_pixels)
    return settings


def _image_files(cfg, layout: ImageLayout | None) -> tuple[str, ...]:
    """The image-text sources a VL config prepares (images.files), checked."""
    im = cfg.images
    if not im.enabled:
        return ()
    if layout is None:
        raise ConfigError(
            "prepare: images.enabled needs the model's image layout (the command derives it)"
        )
    if im.name != "files":
        raise ConfigError(
            f"images.name={im.name!r}: prepare reads image-text pairs of your files: set "
            "images.name=files and images.files (webdataset .tar shards, Parquet, JSONL, folders)"
        )
    return _listed(im.files, "images.files", pairs.pair_format, f"be {pairs.PAIR_SOURCES}")


def _listed(value, key: str, known, expected: str) -> tuple[str, ...]:
    """The files a data.files-like `value` names (paths, globs, URLs), checked: some, with
    distinct names, each of a kind `known(path)` reads (else: it must `expected`)."""
    files = sources.expand_paths(value, key)
    if not files:
        raise ConfigError(f"{key} is empty: give one or more files")
    sources.check_distinct_names(files, key)
    for p in files:
        if not known(p):
            raise ConfigError(f"{key}: {p!r} must {expected}")
    return files


def _files(cfg) -> tuple[str, ...]:
    d = cfg.data
    if d.name != "files":
        raise ConfigError(
            f"data.name={d.name!r}: prepare reads a corpus of your files: set data.name=files "
            "and data.files"
        )
    sources.check_policy(d.on_bad_record)
    suffixes = ", ".join(documents.TEXT_SUFFIXES)
    return _listed(d.files, "data.files", documents.text_format, f"end in {suffixes}")


def prepare(
    cfg,
    out: str = "",
    workers: int = 1,
    part: tuple[int, int] = (0, 1),
    shard_mb: float = 256.0,
    log=print,
    progress_every: float = 5.0,
    block: int = BLOCK,
    layout: ImageLayout | None = None,
) -> dict | None:
    """Prepares `cfg`'s corpus into `out` (default data.prepared_dir): the shards of `part`
    (i, n) (every n-th shard from the i-th) not in the ledger yet, by `workers` processes; then,
    if every shard is done, the manifest, which is returned (None while other parts remain).
    With images.enabled, `layout` (the model's ImageLayout, model/build.image_layout) is
    required: images.files become image-text rows packed and resized for it."""
    out = out or cfg.data.prepared_dir
    if not out:
        raise ConfigError("prepare: give --out DIR or set data.prepared_dir")
    i, n = part
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--part {i}/{n}: expected i/n with 0 <= i < n")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    files = _files(cfg)
    layout = layout if cfg.images.enabled else None
    image_files = _image_files(cfg, layout)
    shards = plan_shards(files, shard_mb, block, image_files)
    # data.files (images.files) is in the plan as its files, resolved: the shards' paths
    checked = set(CHECKED_KEYS) | set(IMAGE_KEYS)
    keys = {
        k: v
        for k, v in data_keys(cfg, layout).items()
        if k in checked and k not in ("data.files", "images.files")
    }
    plan = {"format": FORMAT, **keys, "shard_mb": shard_mb, "block": block}
    plan["shards"] = [[s.path, s.part, s.parts, sources.size(s.path)] for s in shards]
    epath.Path(_path(out, "ledger")).mkdir(parents=True, exist_ok=True)
    _check_plan(out, plan)
    tok_file = prepare_tokenizer(cfg, out, files, part, log, image_files)
    tok = toklib.open_tokenizer(tok_file)
    if tok.vocab_size != cfg.data.vocab_size:
        raise ConfigError(
            f"tokenizer {tok_file} has {tok.vocab_size} pieces, data.vocab_size="
            f"{cfg.data.vocab_size}"
        )
    mine = [s for s in shards if s.index % n == i]
    todo = [s for s in mine if not epath.Path(_ledger(out, s.index)).exists()]
    log(
        f"== prepare {len(files)} file(s), {len(shards)} shard(s) -> {paths.shown(out)}: "
        f"part {i}/{n} has {len(mine)}, {len(mine) - len(todo)} done before, {len(todo)} to do, "
        f"{min(workers, max(len(todo), 1))} worker(s)"
    )
    progress = Progress(todo, log, progress_every)
    _run(todo, _settings(cfg, tok_file, layout), out, workers, progress)
    return finish(cfg, out, shards, tok_file, log, layout)


def _run(todo: list[Shard], settings: dict, out: str, workers: int, progress: Progress) -> None:
    if workers == 1 or len(todo) <= 1:
        for shard in todo:
            _work(shard)(shard, settings, out, progress.add)
            progress.shard_done(shard)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    queue = ctx.Queue()  # handed to each worker as it starts (no manager process to orphan)
    init = (queue, os.getpid())
    try:
        with concurrent.futures.ProcessPoolExecutor(
            min(workers, len(todo)), ctx, initializer=_init_worker, initargs=init
        ) as pool:
            futures = {pool.submit(_worker, (s, settings, out)): s for s in todo}
            pending = set(futures)
            try:
                while pending:
                    done, pending = concurrent.futures.wait(pending, timeout=0.5)
                    while not queue.empty():
                        progress.add(*queue.get())
                    for f in done:
                        f.result()  # a worker's error stops the job: the ledger keeps the rest
                        progress.shard_done(futures[f])
                    if time.time() - progress.last >= progress.every:
                        progress.line()
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        while not queue.empty():
            progress.add(*queue.get())
    finally:
        queue.close()
        queue.join_thread()


def finish(cfg, out: str, shards: list[Shard], tok_file: str, log, layout=None) -> dict | None:
    """The manifest, written when every shard has its ledger entry (else None, said)."""
    entries = [read_json(_ledger(out, s.index)) for s in shards]
    missing = [s.index for s, e in zip(shards, entries, strict=True) if e is None]
    if missing:
        log(
            f"== {len(missing)} of {len(shards)} shard(s) not prepared yet (other parts); the "
            "part that finishes last writes the manifest"
        )
        return None
    splits = {}
    text = [e for e, s in zip(entries, shards, strict=True) if s.kind == "text"]
    image = [e for e, s in zip(entries, shards, strict=True) if s.kind == "images"]
    groups = [(SPLITS, text, "data", "documents")]
    if image:
        groups.append(([IMAGE_SPLIT[x] for x in SPLITS], image, "images", "pairs"))
    for names, group, section, what in groups:
        n_docs = sum(e[split]["documents"] for e in group for split in names)
        for split in names:
            files = [[e[split]["file"], e[split]["rows"]] for e in group if e[split]["rows"]]
            splits[split] = {
                key: sum(e[split][key] for e in group) for key in ("rows", "tokens", "documents")
            }
            splits[split]["files"] = files
            if not splits[split]["rows"]:
                raise DataError(
                    f"{section}.files: the {split} split is empty ({n_docs} {what}, "
                    f"{section}.validation_fraction={cfg[section].validation_fraction}): add "
                    f"{what} or change the fraction"
                )
    tok = toklib.open_tokenizer(tok_file)
    skipped = sum(e["skipped"] for e in entries)
    manifest = {
        "format": FORMAT,
        # the typed data.files, and the files it named here (prepared.check_manifest)
        "config": {
            **data_keys(cfg, layout),
            FILES_RESOLVED: list(dict.fromkeys(s.path for s in shards if s.kind == "text")),
            **(
                {IMAGE_FILES_RESOLVED: [s.path for s in shards if s.kind == "images"]}
                if layout is not None
                else {}
            ),
        },
        "shards": len(shards),
        "pack_seed": "the shard index (data.seed does not change the rows)",
        "tokenizer": {
            "file": os.path.basename(tok_file),
            "sha256": sha256(tok_file),
            "kind": tok.kind,
            "vocab_size": tok.vocab_size,
        },
        "splits": splits,
        # summed over the shards of each kind, as each worker timed its own (entries written
        # before the ledger timed them count 0): throughput per worker = work / these seconds
        "shard_seconds": {
            kind: {
                t: round(sum(e.get("seconds", {}).get(t, 0.0) for e in group), 3)
                for t in ("wall", "cpu")
            }
            for kind, group in (("text", text), ("images", image))
            if group
        },
        "bad_records_skipped": skipped,
        "first_bad_record": next((e["first_skipped"] for e in entries if e["skipped"]), ""),
    }
    paths.write_atomic(_path(out, "manifest.json"), json.dumps(manifest, indent=1))
    if not paths.is_remote(out):
        for p in epath.Path(out).glob("*.tmp-*"):  # a killed run's unfinished files
            p.unlink()
    t, v = splits["train"], splits["validation"]
    log(
        f"== prepared {paths.shown(out)}: train {t['rows']:,} rows ({t['tokens']:,} tokens, "
        f"{t['documents']:,} documents), validation {v['rows']:,} rows ({v['tokens']:,} tokens, "
        f"{v['documents']:,} documents)"
    )
    if image:
        t, v = splits["images_train"], splits["images_validation"]
        log(
            f"== image-text: train {t['rows']:,} rows ({t['documents']:,} pairs), validation "
            f"{v['rows']:,} rows ({v['documents']:,} pairs)"
        )
    if skipped:
        log(
            f"== skipped {skipped} bad record{'s' * (skipped != 1)} (data.on_bad_record=skip); "
            f"the first: {manifest['first_bad_record']}"
        )
    return manifest
