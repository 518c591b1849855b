"""Image-caption pairs from a user's files, in every form `images.files` takes (no TFDS here: the
`LocalImageText` builder in image_text.py reads through this, and so can a command that
prepares data).

A pair is (id, image bytes, caption). By source (paths, globs and URLs as
`sources.expand_paths` reads them):

  a folder                  `x.png` / `x.jpg` / `x.jpeg` / `x.webp`, each with its UTF-8
                            caption `x.txt` beside it (not recursive; id: `folder/x.png`);
                            img2dataset's "files" output is such folders
  .jsonl .jsonl.gz          lines {"image": path relative to the file (or absolute, or a URL),
  .jsonl.zst                "caption": ...} (id: `name:line`)
  .tar                      a webdataset shard, img2dataset's "webdataset" output: members
                            `key.jpg` (or .jpeg / .png / .webp) with `key.txt`, and any others
                            (`key.json`, ...) passed over, a sample's members next to each other
                            (id: `shard.tar/key`)
  .parquet                  img2dataset's "parquet" output: a row per URL, the image bytes in
                            column `image_column` ("jpg") and the caption in `caption_column`
                            ("txt"); rows without an image (img2dataset's failed downloads,
                            null) are passed over like blank lines (id: `name#row`)

Tar members are read into memory from the stream, one sample at a time; nothing is ever
extracted, so a member's name (`../x.jpg`, `/etc/x.jpg`) is only a key and cannot write
anywhere. Members that are not regular files (links, devices, folders) are ignored.

Every image is decoded while read (`images.rgb_bytes`: the bytes as stored, or re-encoded as RGB
PNG) after its size is checked against `max_pixels`, so an undecodable image or a decompression
bomb is a bad record here, named, and never reaches training. Bad records (sources.Tally) also
include a missing or empty caption, a caption that is not UTF-8, a missing image file of a JSONL
line, a sample without image or caption, a damaged tar stream or Parquet row group.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib

from metalm_jax.data import images
from metalm_jax.data.corpora import sources
from metalm_jax.types import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PAIR_SOURCES = "a folder, .jsonl (.gz, .zst), .tar (webdataset) or .parquet"
_TAR_IMAGES = tuple(s[1:] for s in IMAGE_SUFFIXES)  # webdataset extensions
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def pair_format(path: str) -> str:
    """folder | jsonl | tar | parquet, or "" if `path` is none of these."""
    p = path.lower()
    if p.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return "jsonl"
    if p.endswith(".tar"):
        return "tar"
    if p.endswith(".parquet"):
        return "parquet"
    return "folder" if sources.isdir(path) else ""


def read_pairs(
    paths,
    tally=None,
    wanted=None,
    image_column: str = "jpg",
    caption_column: str = "txt",
    max_pixels: int = images.MAX_PIXELS,
):
    """Yields (id, image bytes, caption) of the pairs in `paths`, source by source, in order.

    `tally` (a `sources.Tally`, default: bad records raise) receives the bad records;
    `wanted(id)` False leaves a pair to another reader, unread and undecoded (see sources.py).
    """
    tally = tally if tally is not None else sources.Tally()
    sources.check_distinct_names(paths, "images.files")
    read = _Reader(tally, wanted, max_pixels)
    for path in paths:
        kind = pair_format(path)
        if kind == "folder":
            yield from read.folder(path)
        elif kind == "jsonl":
            yield from read.jsonl(path)
        elif kind == "tar":
            yield from read.tar(path)
        elif kind == "parquet":
            yield from read.parquet(path, image_column, caption_column)
        else:
            raise DataError(f"{path}: not an image-text source; expected {PAIR_SOURCES}")


def _caption(text: str) -> str:
    return " ".join(text.split())


class _Reader:
    """The readers of each source kind, sharing the tally, the filter and the pixel limit."""

    def __init__(self, tally, wanted, max_pixels: int):
        self.tally = tally
        self.wanted = wanted
        self.max_pixels = max_pixels

    def _wants(self, record_id: str) -> bool:
        self.tally.seen += 1
        return self.wanted is None or self.wanted(record_id)

    def _image(self, data: bytes, where: str):
        """The bytes to store, or None after reporting a bad image."""
        try:
            return images.rgb_bytes(data, record_id=where, max_pixels=self.max_pixels)
        except images.ImageError as e:
            self.tally.bad(str(e), images.ImageError)
            return None

    def folder(self, folder: str):
        files = sources.listdir(folder)
        names = [n for n in files if n.lower().endswith(IMAGE_SUFFIXES)]
        if not names:
            raise DataError(f"{folder}: no .png / .jpg / .jpeg / .webp images in this folder")
        for name in names:
            record_id = f"{sources.basename(folder)}/{name}"
            if not self._wants(record_id):
                continue
            image_path = sources.join(folder, name)
            caption_name = name.rsplit(".", 1)[0] + ".txt"
            caption_path = sources.join(folder, caption_name)
            if caption_name not in files:
                self.tally.bad(f"{image_path}: missing caption file {caption_name!r} beside it")
                continue
            try:
                caption = _caption(sources.read_text(caption_path))
            except DataError as e:
                self.tally.bad(str(e))
                continue
            if not caption:
                self.tally.bad(f"{caption_path}: empty caption")
                continue
            image = self._image(sources.read_bytes(image_path), f"{record_id} ({image_path})")
            if image is not None:
                yield record_id, image, caption

    def jsonl(self, path: str):
        base, name = sources.dirname(path), sources.basename(path)
        expected = "an object with keys 'image' and 'caption'"
        wanted = None if self.wanted is None else (lambda n: self.wanted(f"{name}:{n}"))
        for lineno, obj in sources.jsonl_objects(path, expected, self.tally, wanted):
            where = f"{path}:{lineno}"
            problem = ""
            for k in ("image", "caption"):
                if not isinstance(obj.get(k), str):
                    problem = problem or (
                        f"{where}: missing field {k!r}"
                        if k not in obj
                        else f"{where}: field {k!r} must be a string"
                    )
            if problem:
                self.tally.bad(problem)
                continue
            caption = _caption(obj["caption"])
            if not caption:
                self.tally.bad(f"{where}: empty caption")
                continue
            image_path = sources.join(base, obj["image"])
            if not sources.isfile(image_path):
                self.tally.bad(
                    f"{where}: image file {image_path!r} does not exist", FileNotFoundError
                )
                continue
            image = self._image(sources.read_bytes(image_path), f"{where} ({image_path})")
            if image is not None:
                yield f"{name}:{lineno}", image, caption

    def tar(self, path: str):
        name = sources.basename(path)
        seen_keys: set[str] = set()
        samples = 0
        key, members = None, {}  # the sample being collected: {extension: (member name, bytes)}
        last = None  # the last member met, for naming where a damaged stream stopped
        try:
            with sources.open_raw(path) as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
                for member in tf:
                    last = member.name
                    if not member.isfile():  # links, devices, folders: ignored
                        continue
                    member_key, ext = _split_member(member.name)
                    if member_key != key:
                        if key is not None:
                            samples += 1
                            yield from self._sample(path, name, key, members, seen_keys)
                        key, members = member_key, {}
                    if self.wanted is None or self.wanted(f"{name}/{member_key}"):
                        data = None  # other members (key.json, ...) are only named
                        if ext in (*_TAR_IMAGES, "txt"):  # read from the stream, never written
                            data = tf.extractfile(member).read()
                        members.setdefault(ext, []).append((member.name, data))
                if key is not None:
                    samples += 1
                    yield from self._sample(path, name, key, members, seen_keys)
        except _TAR_ERRORS as e:
            lost = key if key is not None else ""
            self.tally.seen += 1
            if self.wanted is None or self.wanted(f"{name}/{lost}"):
                after = f"after member {last!r}" if last is not None else "at its start"
                self.tally.bad(
                    f"{path}: {after}: truncated or corrupt tar data ({sources.one_line(e)}); "
                    "expected a complete tar file (a webdataset shard)"
                )
            return
        if not samples:
            raise DataError(f"{path}: no members; expected webdataset samples (key.jpg + key.txt)")

    def _sample(self, path: str, name: str, key: str, members: dict, seen_keys: set):
        record_id = f"{name}/{key}"
        if not self._wants(record_id):
            return
        where = f"{path}: sample {key!r}"
        if key in seen_keys:
            self.tally.bad(f"{where}: its members are not next to each other in the tar")
            return
        seen_keys.add(key)
        found = [m for ext in _TAR_IMAGES for m in members.get(ext, [])]
        captions = members.get("txt", [])
        if len(found) != 1 or len(captions) != 1:
            have = sorted(m for ms in members.values() for m, _ in ms) or ["nothing"]
            self.tally.bad(
                f"{where}: expected one image ({key}.jpg, .jpeg, .png or .webp) and one "
                f"{key}.txt; found {', '.join(have)}"
            )
            return
        (image_name, data), (caption_name, text) = found[0], captions[0]
        try:
            caption = _caption(text.decode("utf-8"))
        except UnicodeDecodeError as e:
            self.tally.bad(sources.not_utf8(f"{path}: member {caption_name!r}", text, e))
            return
        if not caption:
            self.tally.bad(f"{path}: member {caption_name!r}: empty caption")
            return
        image = self._image(data, f"{path}: member {image_name!r}")
        if image is not None:
            yield record_id, image, caption

    def parquet(self, path: str, image_column: str, caption_column: str):
        name = sources.basename(path)
        wanted = None if self.wanted is None else (lambda r: self.wanted(f"{name}#{r}"))
        columns = [image_column, caption_column]
        try:
            with sources.open_parquet(path) as pf:
                sources.parquet_column_check(
                    path, pf, image_column, ("binary",), "images.image_column"
                )
                sources.parquet_column_check(
                    path, pf, caption_column, ("string",), "images.caption_column"
                )
                if pf.metadata.num_rows == 0:
                    raise DataError(f"{path}: empty file; expected image-caption rows")
                # Images are large: a batch of 64 rows, not Arrow's default 64k.
                for row, (data, text) in sources.parquet_rows(
                    path, pf, columns, self.tally, wanted, batch_size=64
                ):
                    if data is None:  # img2dataset's row for a failed download
                        continue
                    where = f"{path}: row {row}"
                    caption = _caption(text) if text is not None else ""
                    if not caption:
                        self.tally.bad(f"{where}: empty or null caption in {caption_column!r}")
                        continue
                    image = self._image(data, where)
                    if image is not None:
                        yield f"{name}#{row}", image, caption
        except sources.StreamError as e:  # not Parquet at all: one bad record, the file
            self.tally.seen += 1
            if wanted is None or wanted(e.lineno):
                self.tally.bad(str(e))


def _split_member(member_name: str) -> tuple[str, str]:
    """(key, extension) as webdataset reads a member name: the extension starts at the first
    dot of the last path component ("a/b.seg.png" -> ("a/b", "seg.png")), lower-cased."""
    folder, base = posixpath.split(member_name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, ext.lower()
