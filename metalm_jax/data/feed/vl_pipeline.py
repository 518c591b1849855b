"""The image-text side of the grain pipeline, mixed with the text rows for VL pretraining.

    image-text split (TFDS) -> [process shard] -> shuffle/repeat -> decode + resize/crop the
    image to uint8 (normalized later, on the device), tokenize caption (per-index seeded rng:
    augmentation is deterministic) -> pack pairs into rows (PairPackIterDataset,
    checkpointable) -> build_vl_row (random prefix length)
    -> mix with text rows at images.text_ratio -> batch

A corrupt or truncated image raises an ImageError naming the record; with
`images.skip_bad_images` it is skipped, logged with its id and counted (`skipped_images()`),
and the rest of the batch and the run go on.
"""

from __future__ import annotations

import threading

import grain
import numpy as np
from absl import logging

from metalm_jax.data import images as imlib
from metalm_jax.data.corpora import image_text
from metalm_jax.data.corpora.text import load_split
from metalm_jax.data.pretrain.prepared_rows import decode_pairs
from metalm_jax.data.pretrain.vl_rows import PairPacker, build_vl_row
from metalm_jax.data.rows import ImageLayout
from metalm_jax.data.tokenizer import Tokenizer

_skipped = {"count": 0}
_lock = threading.Lock()


def skipped_images() -> int:
    """How many bad images this process skipped so far (images.skip_bad_images)."""
    return _skipped["count"]


def make_image_builder(images_cfg, data_dir: str | None, on_bad_record: str = "error"):
    """The TFDS builder of `images.name` (openmoji | files); `on_bad_record` is
    data.on_bad_record, for a user's files."""
    if images_cfg.name == "openmoji":
        return image_text.OpenMojiCaptions(
            config=str(images_cfg.render_size), data_dir=data_dir, file_format="array_record"
        )
    if images_cfg.name == "files":
        cfg = image_text.local_image_text_config(
            images_cfg.files,
            images_cfg.validation_fraction,
            on_bad_record,
            images_cfg.image_column,
            images_cfg.caption_column,
            images_cfg.max_pixels,
        )
        return image_text.LocalImageText(config=cfg, data_dir=data_dir, file_format="array_record")
    raise ValueError(
        f"images.name: unknown {images_cfg.name!r}; expected 'openmoji', 'files' or one of "
        f"{sorted(image_text.STANDARD_SETS)}"
    )


def image_split(cfg, split: str):
    """Random-access records {id, image, caption} of the configured image-text set; `split` is
    'train' or 'validation' (mapped through images.train_split / images.validation_split)."""
    im = cfg.images
    data_dir = cfg.data.tfds_data_dir or None
    if im.name in image_text.STANDARD_SETS:
        name = im.train_split if split == "train" else im.validation_split
        return image_text.StandardCaptionSource(im.name, name, data_dir, im.captions_per_image)
    return load_split(make_image_builder(im, data_dir, cfg.data.on_bad_record), split)


def captions(cfg, split: str = "train"):
    """Caption strings of a split (added to the tokenizer's training text)."""
    src = image_split(cfg, split)
    for i in range(len(src)):
        yield image_text.as_text(src[i]["caption"])


def _pair_fn(cfg, tok: Tokenizer, layout: ImageLayout):
    augment = bool(cfg.images.augment)
    skip = bool(cfg.images.skip_bad_images)

    def fn(ex, rng):
        rid = image_text.as_text(ex["id"])
        try:
            image = imlib.preprocess(
                ex["image"],
                layout.image_size,
                record_id=rid,
                augment=augment,
                rng=rng,
            )
        except imlib.ImageError as e:
            if not skip:
                raise
            with _lock:
                _skipped["count"] += 1
            logging.warning("skipping image record %s: %s", rid, e)
            return None
        return image, np.asarray(
            tok.encode(image_text.as_text(ex["caption"])) + [tok.eos], np.int32
        )

    return fn


class _PairPackIterator(grain.DatasetIterator):
    """State = parent state before the pending pair (if any): nothing buffered to save."""

    def __init__(self, parent, layout: ImageLayout):
        super().__init__(parent)
        self._state = parent.get_state()
        self._packer = PairPacker(layout, self._fetch)

    def _fetch(self):
        self._state = self._parent.get_state()
        return next(self._parent)

    def __next__(self):
        pairs = self._packer.next_rows_pairs()
        if self._packer.pending is None:
            self._state = self._parent.get_state()
        return pairs

    def get_state(self):
        return {"parent": self._state, "pending": self._packer.pending is not None}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._state = state["parent"]
        self._packer.pending = next(self._parent) if state["pending"] else None


class PairPackIterDataset(grain.IterDataset):
    def __init__(self, parent, layout: ImageLayout):
        super().__init__(parent)
        self._layout = layout

    def __iter__(self):
        return _PairPackIterator(self._parent.__iter__(), self._layout)


def _pairs(cfg, tok, layout, split, shard, seed):
    ds = grain.MapDataset.source(image_split(cfg, split))
    index, count = shard
    ds = ds[index::count]
    if len(ds) == 0:
        raise ValueError(f"images {split}: process {index} of {count} gets no records")
    if seed is not None:
        ds = ds.shuffle(seed=seed).repeat(None)
    ds = ds.random_map(_pair_fn(cfg, tok, layout), seed=(seed or 0) + 3)
    return ds.filter(lambda x: x is not None)


def image_rows(cfg, tok, layout: ImageLayout, shard, seed: int) -> grain.IterDataset:
    """Infinite IterDataset of image-text Batch rows for training."""
    pairs = _pairs(cfg, tok, layout, "train", shard, seed).to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=32)
    )
    packed = PairPackIterDataset(pairs, layout)
    return packed.random_map(lambda p, rng: build_vl_row(p, rng, layout, tok.ids), seed=seed + 4)


def eval_image_rows(cfg, tok, layout: ImageLayout, max_rows: int, shard=(0, 1)) -> list[dict]:
    """Fixed validation rows (file order, fixed prefix lengths)."""
    pairs = _pairs(cfg, tok, layout, "validation", shard, None).to_iter_dataset()
    rng = np.random.default_rng(int(cfg.data.seed) + 5)
    rows = []
    for p in PairPackIterDataset(pairs, layout):
        rows.append(build_vl_row(p, rng, layout, tok.ids))
        if len(rows) == max_rows:
            break
    return rows


def prepared_image_row(record: bytes, rng, layout: ImageLayout, tok, augment: bool, where: str):
    """The Batch row of a prepared image-text record (data/pretrain/prepared_rows.py): each
    JPEG decoded and cropped to uint8 (randomly with `augment`), prefix lengths drawn by `rng`."""
    pairs = []
    for k, (image, caption) in enumerate(decode_pairs(record, where)):
        pixels = imlib.preprocess(
            image, layout.image_size, record_id=f"{where} pair {k}", augment=augment, rng=rng
        )
        pairs.append((pixels, caption))
    return build_vl_row(pairs, rng, layout, tok.ids)
