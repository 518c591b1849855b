"""Checkpoint manifests: the size and SHA-256 of every file of a committed step, written after
Orbax's commit, checked before Orbax reads a byte of the step.

Why: a damaged step handed to Orbax fails partway through its concurrent reads, and the reads
it abandons print pages of tracebacks later, from threads and collected coroutines; and an
exception while restoring says nothing about whether the files are damaged (a transient bucket
error, an out-of-memory error, a sharding bug). So damage is decided here, from the files alone,
before any read: a step whose files do not match its manifest is damaged; a step that matches
is intact, and any error while reading it is a real error (training/checkpoint.py).

Layout, beside Orbax's items in `checkpoints/<step>/`:

    manifest.process_<p>-of-<P>.json   {"process": p, "count": P, "total": n,
                                        "files": {relative path: [size, sha256 hex]}}

The step's files (every file under the step directory but the manifests), sorted by path, are
shared out among the P processes that saved it: process p hashes and lists files[p::P]. So on a
pod each host hashes 1/P of the step, and the step is complete only when all P parts exist
and list `total` files between them. Verifying shares the work the same way among the
processes that read (`check(..., share=(p, P))`; training/checkpoint.py gathers the verdicts).

`checkpoints/manifests.json` ({"since": S}) says from which step on manifests are written: a
step >= S without a complete manifest was committed by Orbax but the run ended before the
manifest was written (kill -9 in that window): 'unfinished', not trusted, like a save cut short;
a step < S was saved before manifests existed and is read unverified (the caller says so in one
line).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re

from etils import epath

from metalm_jax import paths

MARKER = "manifests.json"
_PART = re.compile(r"manifest\.process_(\d+)-of-(\d+)\.json")
_CHUNK = 1 << 20


def part_name(process: int, count: int) -> str:
    return f"manifest.process_{process}-of-{count}.json"


def step_files(step_dir) -> list[str]:
    """Every file under `step_dir` but its manifests, as sorted '/'-separated relative paths."""
    root = epath.Path(step_dir)
    out = []
    for dirpath, _, files in root.walk():
        rel = os.fspath(dirpath.relative_to(root)) if dirpath != root else ""
        for f in files:
            if not (rel == "" and _PART.fullmatch(f)):
                out.append(f"{rel}/{f}" if rel else f)
    return sorted(out)


def _digest(path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in 1 MiB chunks (hashlib releases the GIL: the
    thread pool below hashes several files at once)."""
    h, size = hashlib.sha256(), 0
    with epath.Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _digests(root, rels: list[str]) -> dict[str, tuple[int, str]]:
    root = epath.Path(root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(rels, pool.map(lambda r: _digest(root / r), rels), strict=True))


def write(step_dir, process: int = 0, count: int = 1) -> None:
    """Writes this process's part of the step's manifest (after the step is committed)."""
    files = step_files(step_dir)
    mine = _digests(step_dir, files[process::count])
    record = {
        "process": process,
        "count": count,
        "total": len(files),
        "files": {k: [size, sha] for k, (size, sha) in mine.items()},
    }
    paths.write_atomic(epath.Path(step_dir) / part_name(process, count), json.dumps(record))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the files of one step say. `status`: 'intact' (every file matches its manifest),
    'unverified' (saved before manifests existed), 'damaged' (`file` and `reason` say why),
    'unfinished' (committed by Orbax, but the run ended before writing its manifest: not
    trusted, like a save cut short; a resume with nothing else starts afresh)."""

    step: int
    status: str
    file: str = ""
    reason: str = ""

    @property
    def line(self) -> str:
        """The one line that reports a damaged step."""
        return f"checkpoint step {self.step}: {self.file}: {self.reason}"


def _parts(step_dir) -> tuple[dict | None, str, str]:
    """({relative path: [size, sha]} of the whole manifest, '', '') or (None, file, reason)."""
    root = epath.Path(step_dir)
    found = {}
    for p in root.iterdir() if root.is_dir() else ():
        if m := _PART.fullmatch(p.name):
            found[(int(m.group(1)), int(m.group(2)))] = p
    if not found:
        return None, os.fspath(root), "no manifest (the run ended before writing it)"
    counts = {c for _, c in found}
    if len(counts) != 1:
        return None, os.fspath(root), f"manifest parts of {sorted(counts)} processes mixed"
    (count,) = counts
    missing = [p for p in range(count) if (p, count) not in found]
    if missing:
        return None, os.fspath(root / part_name(missing[0], count)), "manifest part missing"
    files, totals = {}, set()
    for _, path in sorted(found.items()):
        try:
            record = json.loads(path.read_text())
            totals.add(int(record["total"]))
            part = {str(k): [int(v[0]), str(v[1])] for k, v in record["files"].items()}
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return None, os.fspath(path), f"manifest unreadable ({type(e).__name__}: {e})"
        files.update(part)
    if len(totals) != 1 or len(files) != totals.pop():
        return None, os.fspath(root), "manifest parts disagree on the file count"
    return files, "", ""


def check(step_dir, step: int, since: int | None, share: tuple[int, int] = (0, 1)) -> Verdict:
    """The verdict on one step directory's files. `since`: the step from which on manifests are
    written (None: the directory has no marker, e.g. a lone step directory: a step without a
    manifest is then unverified). `share` = (index, count): this process hashes files[index::
    count] of the manifest (sizes are checked in full by every process); the caller combines
    the processes' verdicts (a damaged one wins)."""
    root = epath.Path(step_dir)
    files, file, reason = _parts(root)
    if files is None:
        if has_parts(root):
            return Verdict(step, "damaged", file, reason)
        if since is None or step < since:
            return Verdict(step, "unverified")
        return Verdict(step, "unfinished", file, reason)
    names = sorted(files)
    for rel in names:  # existence and size: cheap, every process checks every file
        path = root / rel
        if not path.exists():
            return Verdict(step, "damaged", os.fspath(path), "file missing")
        size = path.stat().length
        if size != files[rel][0]:
            want = files[rel][0]
            return Verdict(step, "damaged", os.fspath(path), f"size {size}, manifest {want}")
    index, count = share
    mine = names[index::count]
    got = _digests(root, mine)
    for rel in mine:
        if got[rel][1] != files[rel][1]:
            return Verdict(step, "damaged", os.fspath(root / rel), "checksum differs from manifest")
    return Verdict(step, "intact")


def read_since(directory) -> int | None:
    """The marker's step (see the module docstring), or None if the directory has none."""
    path = epath.Path(directory) / MARKER
    if not path.exists():
        return None
    try:
        return int(json.loads(path.read_text())["since"])
    except (ValueError, KeyError, TypeError) as e:
        # the marker is ours and tiny: unreadable means the directory was tampered with; the
        # safe reading is "every step needs a manifest"
        del e
        return 0


def mark_since(directory, step: int) -> None:
    """Writes the marker (process 0, before the first save of a run that writes manifests)
    unless the directory has one."""
    path = epath.Path(directory) / MARKER
    if not path.exists():
        paths.write_atomic(path, json.dumps({"since": int(step)}))


def has_parts(step_dir) -> bool:
    """Whether a step directory holds any manifest part."""
    root = epath.Path(step_dir)
    return root.is_dir() and any(_PART.fullmatch(p.name) for p in root.iterdir())
