"""Where a user's corpus files are and how their bytes are read: the layer under every reader.

The text and image-text readers (`corpora/documents.py`, `corpora/pairs.py`) and the TFDS
builders on top of them read files only through this module, so one set of rules holds for all:

- **Where.** `expand_paths` turns a config value (`data.files`, `images.files`) into paths:
  local paths and globs, and URLs (`gs://bucket/c4/*.jsonl.zst`) read through fsspec, the
  library etils.epath itself uses for gs:// (gcsfs: `pip install -e '.[gcs]'`). A URL is read
  as a stream, never copied to local disk first.
- **Streams.** `numbered_lines` reads a file line by line, `.gz` and `.zst` decompressed as
  they stream (a multi-GB `.jsonl.zst` is never in memory at once); `parquet_rows` reads a
  Parquet file one row group, and within it one batch, at a time.
- **Bad input.** Every problem with the data is one line naming the file and the record (line
  number, tar member, Parquet row) and what was expected. A record that cannot be used (bytes
  that do not decompress, a line that is not UTF-8 or not a JSON object, a missing field, an
  undecodable or oversized image) goes through `Tally.bad`: `data.on_bad_record="error"` (the
  default) raises it as a DataError, `"skip"` counts it and reading goes on with the next
  record it can reach (after a damaged stretch of a compressed stream, the next file; after a
  damaged Parquet row group, the next group). A file that holds no record at all, a missing
  column or a file of an unknown kind is an error under either policy: that is a wrong
  config, not a bad record.
- **Record ids** start with the file's name (`a.jsonl:17`, `b.parquet#3`, `shard.tar/00042`,
  `pics/cat.png`), so two sources with one name would give equal ids: `check_distinct_names`
  refuses them up front. A `wanted(id)` filter lets a caller read only its share of the
  records (a TFDS split, later a prepare worker's part) without parsing, checking or counting
  the others, so every bad record is met by exactly one reader.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import os
import posixpath
import zlib

import zstandard

from metalm_jax.paths import is_remote
from metalm_jax.types import ConfigError, DataError

ON_BAD_RECORD = ("error", "skip")

# Compressed bytes read per step from a .zst/.gz stream: a corpus of ordinary text (3-10x)
# holds well under 1 MB of text at a time. (A degenerate file of one repeated byte expands up
# to ~32,000 times, ~0.5 GB for one step: still bounded, never the whole file.)
_CHUNK = 1 << 14


def hash_fraction(record_id: str) -> float:
    """A stable number in [0, 1) for a record id (the same on every machine and Python), for
    splitting records by id: `validation_fraction` holds out the ids below it."""
    return int(hashlib.sha1(record_id.encode()).hexdigest()[:8], 16) / 2**32


def one_line(e: BaseException) -> str:
    """`Type: message` of a library's exception, on one line, for our own messages."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# The bad-record policy


class Tally:
    """What a reader met, under the `data.on_bad_record` policy ("error" or "skip").

    `bad(message)` is called once per bad record, with the one-line message naming file and
    record: under "error" it raises (a DataError, or `error` when the caller names another
    type), under "skip" it counts the record and returns, and the reader moves on. `seen`
    counts every record met (good, bad, or left to another reader by the `wanted` filter);
    `skipped` the bad ones skipped, `first` the message of the first of them.
    """

    def __init__(self, on_bad_record: str = "error"):
        self.policy = check_policy(on_bad_record)
        self.seen = 0
        self.skipped = 0
        self.first = ""

    def bad(self, message: str, error: type[Exception] = DataError) -> None:
        if self.policy == "error":
            raise error(message)
        self.skipped += 1
        if not self.first:
            self.first = message


def check_policy(on_bad_record) -> str:
    if on_bad_record not in ON_BAD_RECORD:
        raise ConfigError(f"data.on_bad_record: expected 'error' or 'skip', got {on_bad_record!r}")
    return on_bad_record


def skipped_report(what: str, tallies) -> str:
    """One line saying how many bad records `tallies` skipped (and the first), or ""."""
    tallies = list(tallies)
    skipped = sum(t.skipped for t in tallies)
    if not skipped:
        return ""
    first = next(t.first for t in tallies if t.first)
    return (
        f"{what}: skipped {skipped} bad record{'s' * (skipped != 1)} (data.on_bad_record=skip); "
        f"the first: {first}"
    )


# ---------------------------------------------------------------------------------------------
# Local paths and URLs


def _fs(path: str):
    """(fsspec filesystem, path inside it) of a URL; a missing library or an unknown protocol
    is a ConfigError naming the URL."""
    import fsspec  # an etils[epath] dependency; only URLs need it

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as e:
        raise ConfigError(f"{path}: {e} (for gs://: pip install -e '.[gcs]')") from None
    except ValueError as e:
        raise ConfigError(f"{path}: cannot read this URL ({one_line(e)})") from None


def _url(fs, inner: str) -> str:
    return fs.unstrip_protocol(inner)


def basename(path: str) -> str:
    """The last component of a path or URL (a folder's trailing "/" ignored)."""
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def join(base: str, name: str) -> str:
    """`name` inside folder `base`; an absolute path or a URL `name` stands for itself."""
    if is_remote(name) or os.path.isabs(name):
        return name
    return posixpath.join(base, name) if is_remote(base) else os.path.join(base, name)


def dirname(path: str) -> str:
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)


def exists(path: str) -> bool:
    if is_remote(path):
        fs, inner = _fs(path)
        return fs.exists(inner)
    return os.path.exists(path)


def isdir(path: str) -> bool:
    if is_remote(path):
        fs, inner = _fs(path)
        return fs.isdir(inner)
    return os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_remote(path):
        fs, inner = _fs(path)
        return fs.isfile(inner)
    return os.path.isfile(path)


def listdir(folder: str) -> dict[str, tuple]:
    """{name: (size, modification stamp)} of the files directly in `folder`, sorted by name."""
    if is_remote(folder):
        fs, inner = _fs(folder)
        entries = fs.ls(inner, detail=True)
        out = {
            posixpath.basename(e["name"].rstrip("/")): (e.get("size"), _stamp(e))
            for e in entries
            if e.get("type") == "file"
        }
    else:
        out = {}
        for e in os.scandir(folder):
            if e.is_file():
                st = e.stat()
                out[e.name] = (st.st_size, st.st_mtime_ns)
    return dict(sorted(out.items()))


def _stamp(info: dict) -> str:
    """What an object store says changes when an object is rewritten (the first it gives)."""
    for key in ("mtime", "updated", "LastModified", "last_modified", "etag", "ETag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def size(path: str) -> int:
    """The file's size in bytes (a URL's as its filesystem reports it)."""
    if is_remote(path):
        fs, inner = _fs(path)
        return int(fs.info(inner).get("size") or 0)
    return os.path.getsize(path)


def fingerprint(path: str) -> str:
    """A line that changes when the file (or the files of a folder) change: path, sizes and
    modification times. Builder config names hash it, so an edited corpus is prepared again."""
    if isdir(path):
        listing = [f"{name}|{size}|{stamp}" for name, (size, stamp) in listdir(path).items()]
        return f"{path}/\n" + "\n".join(listing)
    if is_remote(path):
        fs, inner = _fs(path)
        info = fs.info(inner)
        return f"{path}|{info.get('size')}|{_stamp(info)}"
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


@contextlib.contextmanager
def open_raw(path: str):
    """The file's bytes as a binary stream (a URL's read as it is consumed)."""
    if is_remote(path):
        fs, inner = _fs(path)
        with fs.open(inner, "rb") as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


def read_bytes(path: str) -> bytes:
    with open_raw(path) as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Paths from the config


def expand_paths(value, key: str) -> tuple[str, ...]:
    """The paths that config key `key` (data.files, images.files) names, in order.

    `value` is a list or tuple of paths, URLs and glob patterns, or one string of them
    separated by commas, as typed on the command line (`--config.data.files=/data/*.jsonl,
    gs://bucket/more/*.jsonl.zst`). Local paths are made absolute (`~` expanded); a pattern
    becomes its matches, sorted. Errors name `key` and the entry: a pattern that matches
    nothing, a path that does not exist, a path named twice.
    """
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected paths (a list, or 'a.jsonl,b.txt'), got {value!r}")
    out: list[str] = []
    for entry in value:
        for path in _expand_entry(entry, key):
            if path in out:
                raise ConfigError(f"{key}: {path!r} is named twice (overlapping globs?)")
            out.append(path)
    return tuple(out)


def _expand_entry(entry, key: str) -> list[str]:
    if not isinstance(entry, str) or not entry:
        raise ConfigError(f"{key}: expected a path or glob pattern, got {entry!r}")
    pattern = any(c in entry for c in "*?[")
    if is_remote(entry):
        fs, inner = _fs(entry)
        if pattern:
            matches = sorted(_url(fs, m) for m in fs.glob(inner))
            if not matches:
                raise FileNotFoundError(f"{key}: pattern {entry!r} matches no files")
            return matches
        if not fs.exists(inner):
            raise FileNotFoundError(f"{key}: {entry!r} does not exist")
        return [_url(fs, inner)]
    path = os.path.expanduser(entry)
    if pattern:
        matches = sorted(glob.glob(path))
        if not matches:
            raise FileNotFoundError(f"{key}: pattern {entry!r} matches no files")
        return [os.path.abspath(m) for m in matches]
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {entry!r} does not exist")
    return [os.path.abspath(path)]


def check_distinct_names(paths, key: str) -> None:
    """Record ids start with their file's name, so two sources with one name are refused."""
    seen: dict[str, str] = {}
    for path in paths:
        name = basename(path)
        if name in seen:
            raise DataError(
                f"{key}: {seen[name]!r} and {path!r} have the same name {name!r}, so their "
                "records would have the same ids: rename one"
            )
        seen[name] = path


# ---------------------------------------------------------------------------------------------
# Line streams (.jsonl, .jsonl.gz, .jsonl.zst)


class StreamError(DataError):
    """The rest of a file cannot be read (truncated or corrupt compressed data, a read error):
    `lineno` is the first line lost."""

    def __init__(self, message: str, lineno: int):
        super().__init__(message)
        self.lineno = lineno


class _ZstdStream(io.RawIOBase):
    """The decompressed bytes of a .zst file of one or more frames, decompressed chunk by chunk.

    Why not zstandard's own `stream_reader`: at the end of its input it ends quietly even inside
    a frame, so a truncated download would read as a shorter corpus. Here a frame still open
    when the input ends is an error, and so is anything that is not a zstd frame.
    """

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # the decompressor of the frame in progress
        self._out = b""
        self._pos = 0
        self._error = None  # met after output not yet read: raised once that output is read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._pos == len(self._out):
            if self._error is not None:
                raise self._error
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if self._frame is not None:
                    raise zstandard.ZstdError("the data ends inside a frame (truncated file?)")
                return 0
            self._out, self._pos = self._decompress(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None:
                self._frame = self._dctx.decompressobj()
            try:
                out.append(self._frame.decompress(data))
            except zstandard.ZstdError as e:  # the lines before the damage are still read
                if not out:
                    raise
                self._error = e
                break
            if self._frame.eof:  # the next frame (if any) starts in what is left over
                data, self._frame = self._frame.unused_data, None
            else:
                data = b""
        return b"".join(out)


_STREAM_KINDS = {".gz": "gzip", ".zst": "zstandard"}


def compression(path: str) -> str:
    """ "gzip", "zstandard" or "" (by the path's last suffix)."""
    return _STREAM_KINDS.get(os.path.splitext(path.rstrip("/"))[1].lower(), "")


@contextlib.contextmanager
def open_stream(path: str):
    """The file's bytes, decompressed as they are read when it ends in .gz or .zst."""
    with open_raw(path) as raw:
        kind = compression(path)
        if kind == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        elif kind == "zstandard":
            yield io.BufferedReader(_ZstdStream(raw), buffer_size=_CHUNK)
        else:
            yield raw


# What a damaged file raises while it is read: gzip (BadGzipFile is an OSError, a truncated
# stream EOFError, bad deflate data zlib.error), zstandard, and I/O errors of the file itself.
_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)


def _expected(path: str) -> str:
    kind = compression(path)
    return f"a complete {kind} file" if kind else "a readable file"


def numbered_lines(path: str):
    """Yields (line number, the line's bytes) of a text file, .gz / .zst decompressed as they
    stream. A read that fails raises StreamError naming the file and the first line lost."""
    lineno = 0
    with open_stream(path) as stream:
        lines = iter(stream)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except _READ_ERRORS as e:
                lost = lineno + 1
                raise StreamError(
                    f"{path}:{lost}: cannot read line {lost} or any after it: truncated or "
                    f"corrupt data ({one_line(e)}); expected {_expected(path)}",
                    lost,
                ) from None
            lineno += 1
            yield lineno, raw


def not_utf8(path: str, data: bytes, error: UnicodeDecodeError, first_line: int = 1) -> str:
    """The message for bytes that are not UTF-8: the line and column of the first bad byte
    (`data` begins at line `first_line`)."""
    line = first_line + data.count(b"\n", 0, error.start)
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (
        f"{path}:{line}: not UTF-8 (byte {data[error.start]:#04x} at line {line}, column "
        f"{column}); expected a UTF-8 text file"
    )


def read_text(path: str) -> str:
    """The text of a whole UTF-8 file (.gz / .zst decompressed); bytes that are not UTF-8 are a
    DataError naming file, line and column, a damaged stream one naming the file."""
    try:
        with open_stream(path) as f:
            data = f.read()
    except _READ_ERRORS as e:
        raise DataError(
            f"{path}: cannot read ({one_line(e)}); expected {_expected(path)}"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(not_utf8(path, data, e)) from None


def jsonl_objects(path: str, expected: str = "a JSON object", tally=None, wanted=None):
    """Yields (line number, dict) for the non-blank lines of a JSONL file (.jsonl, .jsonl.gz,
    .jsonl.zst; a path or URL), streamed.

    A line that is not UTF-8, not JSON or not an object goes to `tally.bad` (default: raise),
    naming file, line and `expected`; a stream that cannot be read on goes there once, for the
    rest of the file. `wanted(lineno)` False passes a line over unread (it is still counted in
    `tally.seen`). A file without a non-blank line is a DataError under either policy.
    """
    tally = tally if tally is not None else Tally()
    lines = 0
    try:
        for lineno, raw in numbered_lines(path):
            if not raw.strip():
                continue
            lines += 1
            tally.seen += 1
            if wanted is not None and not wanted(lineno):
                continue
            obj, problem = _json_object(path, lineno, raw, expected)
            if problem:
                tally.bad(problem)
            else:
                yield lineno, obj
    except StreamError as e:
        tally.seen += 1
        if wanted is None or wanted(e.lineno):
            tally.bad(str(e))
        return
    if not lines:
        raise DataError(f"{path}: empty file; expected one JSON object per line ({expected})")


def _json_object(path: str, lineno: int, raw: bytes, expected: str):
    import json

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, not_utf8(path, raw, e, lineno)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path}:{lineno}: not valid JSON ({e.msg})"
    if not isinstance(obj, dict):
        return None, f"{path}:{lineno}: expected {expected}"
    return obj, ""


# ---------------------------------------------------------------------------------------------
# Parquet


@contextlib.contextmanager
def open_parquet(path: str):
    """A `pyarrow.parquet.ParquetFile` (local files through Arrow's own reader, URLs through a
    seekable fsspec file); a file that is not Parquet raises StreamError for row 0."""
    import pyarrow.parquet as pq

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_raw(path)) if is_remote(path) else path
        try:
            pf = pq.ParquetFile(source)
        except Exception as e:  # ArrowInvalid, OSError: not Parquet, truncated footer
            raise StreamError(
                f"{path}: not a readable Parquet file ({one_line(e)}); expected a Parquet file",
                0,
            ) from None
        stack.callback(pf.close)
        yield pf


def parquet_column_check(path: str, pf, column: str, kinds: tuple[str, ...], key: str) -> None:
    """A DataError (either policy: a config matter) unless `column` exists and its Arrow type
    is one of `kinds` ("string", "binary"); the message names the columns there are and `key`."""
    import pyarrow as pa

    schema = pf.schema_arrow
    if column not in schema.names:
        raise DataError(
            f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); set {key} "
            "to the column to read"
        )
    t = schema.field(column).type
    is_kind = {
        "string": pa.types.is_string(t) or pa.types.is_large_string(t),
        "binary": pa.types.is_binary(t) or pa.types.is_large_binary(t),
    }
    if not any(is_kind[k] for k in kinds):
        raise DataError(
            f"{path}: column {column!r} holds {t}; expected {' or '.join(kinds)} values ({key})"
        )


def parquet_rows(path: str, pf, columns, tally, wanted=None, batch_size: int = 1024):
    """Yields (row index, values of `columns`) of an open Parquet file, one row group and one
    batch of `batch_size` rows at a time (memory: one batch of the wanted columns).

    A row group whose data cannot be decoded goes to `tally.bad` once (naming the file, the
    first row lost and the group) and reading goes on with the next group. `wanted(row)` False
    passes a row over (a group with no wanted row is not read at all)."""
    start = 0
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        tally.seen += n
        rows = range(start, start + n)
        if wanted is not None and not any(wanted(r) for r in rows):
            start += n
            continue
        row = start
        try:
            for batch in pf.iter_batches(batch_size, row_groups=[group], columns=list(columns)):
                values = [batch.column(c).to_pylist() for c in columns]
                for record in zip(*values, strict=True):
                    if wanted is None or wanted(row):
                        yield row, record
                    row += 1
        except Exception as e:  # OSError, ArrowException: corrupt pages, bad compression
            if wanted is None or wanted(row):
                tally.bad(
                    f"{path}: row {row}: corrupt Parquet data in row group {group} (rows "
                    f"{start}-{start + n - 1}; {one_line(e)}); expected a readable Parquet file"
                )
        start += n
