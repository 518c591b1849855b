"""A run's files on any filesystem etils.epath knows: a local directory or a URL (gs://bucket/run).

Every file a run reads or writes in its workdir (tokenizer, metrics.jsonl, TensorBoard events,
evals/, the lock, checkpoint side files) goes through epath, so one code path serves both.
Orbax writes the checkpoints themselves (TensorStore for the arrays). epath reaches gs:// and
s3:// through fsspec (gcsfs / s3fs: `pip install -e '.[gcs]'`), or through TensorFlow's gfile
when TensorFlow is installed.

Writes: a local file is written beside its name and renamed into place, so a crash never
leaves half a file; an object store has no atomic rename, but an object appears whole when its
upload completes, so objects are written in place.
"""

from __future__ import annotations

import os

from etils import epath

from metalm_jax.types import ConfigError


def is_remote(path) -> bool:
    """True for a URL (gs://..., s3://...), False for a local path."""
    return "://" in os.fspath(path)


def check_reachable(path) -> None:
    """Raises ConfigError (one line, naming the extra) if `path` is a URL whose filesystem
    library is not installed (gs:// without gcsfs or TensorFlow)."""
    if not is_remote(path):
        return
    try:
        epath.Path(path).exists()
    except ImportError as e:
        raise ConfigError(f"{os.fspath(path)}: {e} (for gs://: pip install -e '.[gcs]')") from None


def shown(path) -> str:
    """The path as a message names it: absolute if local, as given if a URL."""
    return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def write_atomic(path, data: bytes | str) -> None:
    """Writes `data` to `path` (parents created) so that no reader sees half of it."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        path.write_bytes(raw)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def copy_file(src, dst) -> None:
    """`src` copied to `dst` with write_atomic (either may be local or a URL)."""
    write_atomic(dst, epath.Path(src).read_bytes())
