"""Image-text rows for the vision-language objective (PAPER.md §2.4), pure numpy.

For an image-text pair the encoder sees the image plus a text prefix of random length k (a joint
VL encoder only; a vision-only encoder sees just the image and k = 0); the decoder predicts the
rest of the caption. Several pairs are packed into one row, each its own segment, one image each.

One pair in the decoder row (S image slots, prefix x0 x1, caption x0 .. x4 </s>):

    position     0    1 .. S   S+1  S+2   S+3  S+4  S+5  S+6
    tokens      <s>  [img]     [x0] [x1]  x2   x3   x4   </s>
    slot_index  -1   b .. b+S-1 b+S b+S+1 -1   -1   -1   -1
    targets      .    . .. .    .    x2   x3   x4   </s>  .
    loss_weight  0    0 .. 0    0    1    1    1    1     0

The last slot (the last prefix slot, or the last image slot when k = 0) predicts the first
caption token after the prefix; the loss covers exactly the caption tokens after the prefix.
`b` is the image's base in the slot bank: text-encoder grid length + image index * S', with S'
= S + Lp (image tokens then prefix positions; `ImageLayout.bank`, types.SlotBank).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metalm_jax.data.images import CLIP_MEAN, CLIP_STD
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds
from metalm_jax.types import ConfigError, SlotBank


@dataclasses.dataclass(frozen=True)
class ImageLayout:
    seq_len: int  # decoder row length L
    images_per_row: int  # Ni
    image_slots: int  # S: decoder slots for the image itself
    prefix_len: int  # Lp: prefix positions the encoder reads (0 = vision-only encoder)
    # The bank's text part and the Batch's encoder grid are one length Le with a text encoder;
    # without one the grid keeps its Le (every row of a batch has one shape) and the bank none.
    text_bank: int  # Le when a text encoder precedes the images in the bank, else 0
    image_size: int
    enc_length: int  # text-encoder grid length Le of the Batch (empty for image rows)
    mean: tuple = CLIP_MEAN  # per-channel pixel normalization (images.mean / images.std)
    std: tuple = CLIP_STD

    @property
    def slots_per_image(self) -> int:
        return self.image_slots + self.prefix_len

    @property
    def bank(self) -> SlotBank:
        """The slot bank of a row (types.py): the text grid, then S' slots per image."""
        return SlotBank(self.text_bank, self.slots_per_image, self.images_per_row)

    def pair_length(self, caption_len: int) -> int:
        """Decoder positions one pair takes: <s>, image slots, then every caption token."""
        return 1 + self.image_slots + caption_len


def empty_image_fields(layout: ImageLayout, rows: int | None = None) -> dict:
    lead = () if rows is None else (rows,)
    n, s, lp = layout.images_per_row, layout.image_size, max(layout.prefix_len, 1)
    return {
        "images": np.zeros((*lead, n, s, s, 3), np.float32),
        "image_valid": np.zeros((*lead, n), np.int32),
        "vl_prefix": np.zeros((*lead, n, lp), np.int32),
        "vl_prefix_mask": np.zeros((*lead, n, lp), np.int32),
    }


def build_vl_row(
    pairs, rng: np.random.Generator, layout: ImageLayout, ids: SpecialIds = SENTENCEPIECE_IDS
) -> dict:
    """[(image float32[H, W, 3], caption int32[n] ending in </s>), ...] -> one Batch row.

    Each pair is the example [Image(image, caption[:k]), Target(caption[k:])] of data/rows.py,
    k drawn uniformly from 0 .. min(Lp, n - 1). The pairs must fit: sum of pair_length <=
    seq_len and len(pairs) <= images_per_row. `ids`: the tokenizer's special ids.
    """
    from metalm_jax.data.rows import Image, RowBuilder, Target

    if len(pairs) > layout.images_per_row:
        raise ValueError(f"{len(pairs)} images for a row of {layout.images_per_row}")
    builder = RowBuilder(layout.seq_len, layout.enc_length, layout=layout, ids=ids)
    for image, caption in pairs:
        caption = np.asarray(caption, np.int32)
        n = len(caption)
        if n < 1:
            raise ValueError("empty caption")
        k = int(rng.integers(0, min(layout.prefix_len, n - 1) + 1)) if layout.prefix_len else 0
        if not builder.add([Image(image, caption[:k]), Target(caption[k:])]):
            raise ValueError(f"pairs need more than the row's {layout.seq_len} positions")
    return builder.row()


class PairPacker:
    """Greedily packs (image, caption) pairs into rows; like SentencePacker its position is the
    parent stream plus at most one pending pair, so a data iterator can checkpoint it exactly."""

    def __init__(self, layout: ImageLayout, next_pair):
        self.layout = layout
        self._next_pair = next_pair
        self.pending = None

    def next_rows_pairs(self):
        pairs, used = [], 0
        while len(pairs) < self.layout.images_per_row:
            if self.pending is None:
                try:
                    self.pending = self._next_pair()
                except StopIteration:
                    if pairs:
                        break
                    raise
            caption = self.pending[1]
            cap = min(len(caption), self.layout.seq_len - 1 - self.layout.image_slots)
            if cap < 1:
                raise ConfigError(
                    f"model.decoder rows of {self.layout.seq_len} cannot hold "
                    f"{self.layout.image_slots} image slots and a caption"
                )
            need = self.layout.pair_length(cap)
            if used + need > self.layout.seq_len:
                break
            pairs.append((self.pending[0], np.asarray(caption[:cap], np.int32)))
            used += need
            self.pending = None
        return pairs
