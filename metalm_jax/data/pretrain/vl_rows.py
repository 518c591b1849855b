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
= S + Lp (image tokens then prefix positions; data/rows.ImageLayout.bank, types.SlotBank).
"""

from __future__ import annotations

import numpy as np

from metalm_jax.data.rows import Image, ImageLayout, RowBuilder, Target
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds
from metalm_jax.types import ConfigError


def build_vl_row(
    pairs, rng: np.random.Generator, layout: ImageLayout, ids: SpecialIds = SENTENCEPIECE_IDS
) -> dict:
    """[(image uint8[H, W, 3], caption int32[n] ending in </s>), ...] -> one Batch row.

    Each pair is the example [Image(image, caption[:k]), Target(caption[k:])] of data/rows.py,
    k drawn uniformly from 0 .. min(Lp, n - 1). The pairs must fit: sum of pair_length <=
    seq_len and len(pairs) <= images_per_row. `ids`: the tokenizer's special ids.
    """
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
