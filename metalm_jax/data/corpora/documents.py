"""Text documents from a user's files, in every format `data.files` takes (no TFDS here: the
`LocalText` builder in text.py reads through this, and so can a command that prepares data).

A document is (id, [paragraphs]); each paragraph becomes one "sentence" of full-sentence
packing. By format (the path's suffix; paths, globs and URLs as `sources.expand_paths` reads):

  .txt                      the whole file is one document (id: the file name), paragraphs
                            separated by blank lines, whitespace inside one collapsed
  .jsonl .jsonl.gz          one document per line, in field `text_key` (id: `name:line`),
  .jsonl.zst                paragraphs separated by "\\n"; the Pile, C4 and Dolma come so.
                            Compressed files are decompressed as they stream
  .parquet                  one document per row, in column `text_key` (id: `name#row`, rows
                            counted from 0); Hugging Face datasets come so. Read one row group
                            and batch at a time

Bad records (sources.Tally): a JSONL line that is not UTF-8, not JSON or not an object, a
missing or non-string field, a null Parquet value, an empty document, a .txt file that is not
UTF-8, a damaged stretch of a compressed stream or Parquet row group. Under
`data.on_bad_record="error"` the first stops the reading with one line naming the file and the
record; under "skip" they are counted and left out. A file without any record, a Parquet file
without the column, or a column that does not hold strings is an error either way.
"""

from __future__ import annotations

from metalm_jax.data.corpora import sources
from metalm_jax.types import DataError

TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")


def text_format(path: str) -> str:
    """The format of a corpus file by its name: txt | jsonl | parquet, or "" if none."""
    p = path.lower()
    if p.endswith(".txt"):
        return "txt"
    if p.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return "jsonl"
    if p.endswith(".parquet"):
        return "parquet"
    return ""


def paragraphs(text: str) -> list[str]:
    """The non-blank lines of a JSONL / Parquet document, stripped."""
    return [p.strip() for p in text.split("\n") if p.strip()]


def read_documents(paths, text_key: str = "text", tally=None, wanted=None):
    """Yields (id, [paragraphs]) of the documents in `paths`, file by file, in file order.

    `tally` (a `sources.Tally`, default: bad records raise) receives the bad records;
    `wanted(id)` False leaves a document to another reader, unread (see sources.py).
    """
    tally = tally if tally is not None else sources.Tally()
    sources.check_distinct_names(paths, "data.files")
    for path in paths:
        kind = text_format(path)
        if kind == "txt":
            yield from _txt_document(path, tally, wanted)
        elif kind == "jsonl":
            yield from _jsonl_documents(path, text_key, tally, wanted)
        elif kind == "parquet":
            yield from _parquet_documents(path, text_key, tally, wanted)
        else:
            expected = ", ".join(TEXT_SUFFIXES)
            raise DataError(f"{path}: not a corpus file; expected one of {expected}")


def _txt_document(path: str, tally, wanted):
    doc_id = sources.basename(path)
    tally.seen += 1
    if wanted is not None and not wanted(doc_id):
        return
    try:
        text = sources.read_text(path)
    except DataError as e:
        tally.bad(str(e))
        return
    paras = [" ".join(p.split()) for p in text.split("\n\n")]
    paras = [p for p in paras if p]
    if not paras:
        raise DataError(f"{path}: empty file; expected text (one document, blank-line paragraphs)")
    yield doc_id, paras


def _jsonl_documents(path: str, text_key: str, tally, wanted):
    name = sources.basename(path)
    expected = f"an object with key {text_key!r}"
    want_line = None if wanted is None else (lambda n: wanted(f"{name}:{n}"))
    for lineno, obj in sources.jsonl_objects(path, expected, tally, want_line):
        where = f"{path}:{lineno}"
        if text_key not in obj:
            tally.bad(f"{where}: expected {expected}")
            continue
        text = obj[text_key]
        if not isinstance(text, str):
            tally.bad(f"{where}: field {text_key!r} must be a string")
            continue
        paras = paragraphs(text)
        if not paras:
            tally.bad(f"{where}: empty document in field {text_key!r}")
            continue
        yield f"{name}:{lineno}", paras


def _parquet_documents(path: str, text_key: str, tally, wanted):
    name = sources.basename(path)
    want_row = None if wanted is None else (lambda r: wanted(f"{name}#{r}"))
    try:
        with sources.open_parquet(path) as pf:
            sources.parquet_column_check(path, pf, text_key, ("string",), "data.text_key")
            if pf.metadata.num_rows == 0:
                raise DataError(f"{path}: empty file; expected rows with a {text_key!r} column")
            for row, (text,) in sources.parquet_rows(path, pf, [text_key], tally, want_row):
                if text is None:
                    tally.bad(f"{path}: row {row}: column {text_key!r} is null; expected a string")
                    continue
                paras = paragraphs(text)
                if not paras:
                    tally.bad(f"{path}: row {row}: empty document in column {text_key!r}")
                    continue
                yield f"{name}#{row}", paras
    except sources.StreamError as e:  # not Parquet at all: one bad record, the file
        tally.seen += 1
        if want_row is None or want_row(e.lineno):
            tally.bad(str(e))
