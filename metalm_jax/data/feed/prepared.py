"""A prepared directory (written by data/feed/prepare.py) as training reads it: its file names, the
data keys its manifest records, the check that they and the tokenizer match a run's config,
and its splits as random-access sources of records (pretrain/prepared_rows.py decodes them).

Kept apart from the job that writes it (prepare.py: processes, ledger, progress), so a
training process imports only this.
"""

from __future__ import annotations

import hashlib
import json
import os

import grain
from etils import epath

from metalm_jax.data import tokenizer as toklib
from metalm_jax.data.corpora.sources import expand_paths
from metalm_jax.data.pretrain.prepared_rows import decode_row
from metalm_jax.types import ConfigError, DataError

FORMAT = 1
SPLITS = ("train", "validation")
# the image-text rows of a split (a VL config's prepared directory)
IMAGE_SPLIT = {"train": "images_train", "validation": "images_validation"}
# The data keys that decide the rows: compared with plan.json when preparing again into a
# directory, and with the manifest when training reads it (data.on_bad_record and
# data.tokenizer_path are recorded only: the tokenizer is compared by its SHA-256).
CHECKED_KEYS = (
    "data.name",
    "data.files",
    "data.text_key",
    "data.validation_fraction",
    "data.seq_len",
    "data.vocab_size",
    "data.open_documents",
)


# With images.enabled (a VL config) also these, and the image layout the pairs were packed
# and resized for (model/build.image_layout: row length, pairs per row, image slots, pixels).
IMAGE_KEYS = (
    "images.name",
    "images.files",
    "images.validation_fraction",
    "images.image_column",
    "images.caption_column",
    "images.max_pixels",
    "images.layout",
)


# The manifest's record of the files data.files named when the rows were prepared (globs
# matched, paths absolute): a config that types them otherwise (a glob for a list, a relative
# path) is the same corpus. The same for images.files.
FILES_RESOLVED = "data.files resolved"
IMAGE_FILES_RESOLVED = "images.files resolved"
_RESOLVED = {"data.files": FILES_RESOLVED, "images.files": IMAGE_FILES_RESOLVED}


def _files_value(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def layout_key(layout) -> dict | None:
    """What of an ImageLayout decides the prepared image-text rows (None: text only)."""
    if layout is None:
        return None
    return {
        "seq_len": int(layout.seq_len),
        "images_per_row": int(layout.images_per_row),
        "image_slots": int(layout.image_slots),
        "image_size": int(layout.image_size),
    }


def image_keys(cfg, layout) -> dict:
    """The image-text keys that decide the prepared image-text rows (empty: text only)."""
    if layout is None:
        return {}
    im = cfg.images
    return {
        "images.name": im.name,
        "images.files": _files_value(im.files),
        "images.validation_fraction": float(im.validation_fraction),
        "images.image_column": im.image_column,
        "images.caption_column": im.caption_column,
        "images.max_pixels": int(im.max_pixels),
        "images.layout": layout_key(layout),
    }


def data_keys(cfg, layout=None) -> dict:
    """The config keys that decide the prepared rows, as plain values (with an ImageLayout:
    the image-text keys too)."""
    d = cfg.data
    return {
        **image_keys(cfg, layout),
        "data.name": d.name,
        "data.files": _files_value(d.files),
        "data.text_key": d.text_key,
        "data.validation_fraction": float(d.validation_fraction),
        "data.on_bad_record": d.on_bad_record,
        "data.seq_len": int(d.seq_len),
        "data.vocab_size": int(d.vocab_size),
        "data.open_documents": int(d.open_documents),
        "data.tokenizer_path": d.tokenizer_path,
    }


def path(out: str, name: str) -> str:
    """`name` inside the prepared directory `out` (local or a URL)."""
    return os.fspath(epath.Path(out) / name)


def shard_file(split: str, index: int) -> str:
    return f"{split}-{index:05d}.array_record"


def read_json(file: str):
    """The JSON in `file`, or None when there is no such file."""
    p = epath.Path(file)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise DataError(f"{file}: not valid JSON ({e}); delete it to prepare again") from None


def sha256(file: str) -> str:
    return hashlib.sha256(epath.Path(file).read_bytes()).hexdigest()


def tokenizer_in(out: str) -> str:
    """The tokenizer file of a prepared directory ("" if none yet)."""
    for name in toklib.SAVED_NAMES:
        if epath.Path(path(out, name)).is_file():
            return path(out, name)
    return ""


def read_manifest(out: str) -> dict:
    manifest = read_json(path(out, "manifest.json"))
    if manifest is None:
        raise DataError(
            f"data.prepared_dir={out}: no manifest.json (not prepared, or not finished): run "
            "python -m metalm_jax.prepare with this config"
        )
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"data.prepared_dir={out}: manifest format {manifest.get('format')!r}, this code "
            f"reads {FORMAT}: prepare again"
        )
    return manifest


def check_manifest(cfg, tok, manifest: dict, layout=None) -> None:
    """Raises naming the first data key whose value differs from the one the rows were
    prepared with, or the tokenizer when it is not the one (by SHA-256). With an ImageLayout
    (a VL run) the image-text keys are checked too."""
    out = cfg.data.prepared_dir
    saved, now = manifest.get("config", {}), data_keys(cfg, layout)
    keys = CHECKED_KEYS + (IMAGE_KEYS if layout is not None else ())
    for key in keys:
        if saved.get(key) != now[key] and not (key in _RESOLVED and _same_files(cfg, saved, key)):
            if key == "images.name" and key not in saved:
                raise ConfigError(
                    f"data.prepared_dir={out}: its rows are text only, this config reads "
                    "images (images.enabled): prepare again with this config"
                )
            fix = f"set --config.{key} to the prepared value"
            if key == "images.layout":  # not a key of its own: derived from the model
                fix = "set data.seq_len, images.images_per_row and model.vision as prepared"
            raise ConfigError(
                f"data.prepared_dir={out}: its rows were prepared with {key}={saved.get(key)!r}, "
                f"this config has {key}={now[key]!r}: prepare again with this config, or {fix}"
            )
    want, got = manifest["tokenizer"]["sha256"], sha256(tok.source)
    if got != want:
        raise ConfigError(
            f"data.prepared_dir={out}: the run's tokenizer {tok.source} (SHA-256 {got[:12]}) is "
            f"not the one its rows were made with ({manifest['tokenizer']['file']}, "
            f"{want[:12]}): unset data.tokenizer_path, or use a fresh --workdir"
        )


def _same_files(cfg, saved: dict, key: str = "data.files") -> bool:
    """data.files (or images.files) typed otherwise than when preparing, naming the same files
    in the same order. False where the manifest predates the record, or the files cannot be
    listed here (a training host without the raw corpus): then the typed values must match."""
    want = saved.get(_RESOLVED[key])
    section, name = key.split(".")
    if not want or (key == "data.files" and cfg.data.name != "files"):
        return False
    try:
        return list(expand_paths(cfg[section][name], key)) == want
    except (OSError, ConfigError):
        return False


def split_source(out: str, manifest: dict, split: str):
    """A random-access source of the records of a prepared split, its shards in order."""
    names = [name for name, _ in manifest["splits"][split]["files"]]
    src = grain.sources.ArrayRecordDataSource([path(out, name) for name in names])
    if len(src) != manifest["splits"][split]["rows"]:
        raise DataError(
            f"data.prepared_dir={out}: the {split} shards hold {len(src)} rows, the manifest "
            f"says {manifest['splits'][split]['rows']}: prepare again"
        )
    return src


def read_rows(out: str, manifest: dict, split: str) -> list[dict]:
    """Every row of a prepared split, in order (tests, small validation splits)."""
    src = split_source(out, manifest, split)
    return [decode_row(src[k], f"{out} {split} row {k}") for k in range(len(src))]
