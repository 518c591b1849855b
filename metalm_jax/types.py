"""The Batch contract: the one structure that crosses from the data pipeline into the model.

Every stage talks through it. Shapes are static (B rows, decoder length L, encoder length Le) so
the train step compiles once. Built from plain numpy by the data pipeline; a pytree for jax.

Decoder grid, all [B, L]:
  tokens        int32    decoder input ids (value ignored where slot_index >= 0)
  slot_index    int32    -1 at text positions; else an index into this row's slot bank, i.e.
                         the encoder grid position whose (connected) output replaces the embedding
  targets       int32    next-token targets
  loss_weights  float32  where targets count (Eq. 1 of the paper: see data/spans.py)
  segment_ids   int32    packing: one id per document in the row, 0 = padding
  positions     int32    position within its segment

Text-encoder grid, all [B, Le]: every span is its own segment, positions restart per span.
  enc_tokens       int32
  enc_segment_ids  int32   0 = padding
  enc_positions    int32

Image grid (only with a vision encoder; None otherwise), Ni images per row:
  images           uint8[B, Ni, H, W, 3]     RGB pixels, resized and cropped on the host
                                             (data/images.py); the vision encoder normalizes
                                             them inside the jitted step (model/vision.py)
  image_valid      int32[B, Ni]              1 = a real image, 0 = padding
  vl_prefix        int32[B, Ni, Lp]          the text prefix a joint VL encoder reads with it
  vl_prefix_mask   int32[B, Ni, Lp]          1 = a real prefix token

Slot bank layout (what slot_index points into; `SlotBank` below is its one definition): the
text-encoder grid first (Le entries, when there is a text encoder), then S' entries per image:
image i's outputs at Le + i*S' + j (image tokens first, then its prefix positions). The model's
gather cannot raise inside jit (it clips), so an index past the bank is an error on the host:
in `SlotBank.check`, which `Batch.validate`, the row builder and the trainer's batches use.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import numpy as np

DECODER_FIELDS = ("tokens", "slot_index", "targets", "loss_weights", "segment_ids", "positions")
TEXT_ENCODER_FIELDS = ("enc_tokens", "enc_segment_ids", "enc_positions")
IMAGE_FIELDS = ("images", "image_valid", "vl_prefix", "vl_prefix_mask")
FIELD_DTYPES = {
    "tokens": np.int32,
    "slot_index": np.int32,
    "targets": np.int32,
    "loss_weights": np.float32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "enc_tokens": np.int32,
    "enc_segment_ids": np.int32,
    "enc_positions": np.int32,
    "images": np.uint8,  # normalized on the device: a quarter of float32's bytes to move
    "image_valid": np.int32,
    "vl_prefix": np.int32,
    "vl_prefix_mask": np.int32,
}


@dataclasses.dataclass(frozen=True)
class SlotBank:
    """The slot bank of one row: `text` entries of the text-encoder grid (Le, or 0 without a
    text encoder), then `per_image` (S' = S + Lp) entries for each of `images` images.

        text = 4, per_image = 3, images = 2:
        bank index   0  1  2  3 | 4  5  6 | 7  8  9
        holds        text grid  | image 0 | image 1     size 10; slot_index in -1 .. 9
    """

    text: int
    per_image: int = 0
    images: int = 0

    @property
    def size(self) -> int:
        return self.text + self.images * self.per_image

    def text_slots(self, start: int, n: int) -> np.ndarray:
        """int32[n]: the bank indices of encoder grid positions start .. start + n - 1."""
        if not 0 <= start <= start + n <= self.text:
            raise ValueError(
                f"encoder grid positions {start}..{start + n - 1}: the slot bank holds "
                f"{self.text} text-encoder positions (none without a text encoder)"
            )
        return np.arange(start, start + n, dtype=np.int32)

    def image_slots(self, image: int, n: int) -> np.ndarray:
        """int32[n]: the bank indices of the first `n` outputs of the row's `image`-th image
        (its S image tokens, then its prefix positions)."""
        if not 0 <= image < self.images or not 0 <= n <= self.per_image:
            raise ValueError(
                f"image {image}, {n} slots: the slot bank has {self.images} images of "
                f"{self.per_image} slots"
            )
        base = self.text + image * self.per_image
        return np.arange(base, base + n, dtype=np.int32)

    def check(self, slot_index: np.ndarray) -> None:
        """Raises ValueError naming the first row and position of `slot_index` (int32[L] or
        [B, L]) that is neither -1 (text) nor an index into this bank."""
        idx = np.asarray(slot_index)
        bad = (idx < -1) | (idx >= self.size)
        if not bad.any():
            return
        where = np.argwhere(bad.reshape(-1, idx.shape[-1]))[0]
        row, pos = int(where[0]), int(where[1])
        raise ValueError(
            f"slot_index {int(idx.reshape(-1, idx.shape[-1])[row, pos])} at row {row}, "
            f"position {pos} is past the slot bank ({self.text} text-encoder positions + "
            f"{self.images} images x {self.per_image} slots = {self.size} entries)"
        )


@flax.struct.dataclass
class Batch:
    """One global (or per-process) batch. See the module docstring for shapes."""

    tokens: np.ndarray
    slot_index: np.ndarray
    targets: np.ndarray
    loss_weights: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    enc_tokens: np.ndarray
    enc_segment_ids: np.ndarray
    enc_positions: np.ndarray
    images: np.ndarray | None = None
    image_valid: np.ndarray | None = None
    vl_prefix: np.ndarray | None = None
    vl_prefix_mask: np.ndarray | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Batch:
        required = DECODER_FIELDS + TEXT_ENCODER_FIELDS
        missing = [n for n in required if n not in d]
        if missing:
            raise KeyError(f"Batch is missing fields {missing}; got {sorted(d)}")
        unknown = sorted(set(d) - set(required) - set(IMAGE_FIELDS))
        if unknown:
            raise KeyError(f"Batch has unknown fields {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        """The fields that are present (image fields only when set)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in out.items() if v is not None}

    def validate(self, bank: SlotBank | None = None) -> None:
        """Checks shapes and dtypes against the contract, and every slot_index against `bank`
        (default for a batch without images: its text-encoder grid; with images S' is the
        model's, so only a given bank is checked); raises ValueError naming the field (and for
        a slot index, the row and position)."""
        b, length = self.tokens.shape
        for name in DECODER_FIELDS:
            arr = getattr(self, name)
            if arr.shape != (b, length):
                raise ValueError(f"Batch.{name}: expected shape {(b, length)}, got {arr.shape}")
        b2, le = self.enc_tokens.shape
        for name in TEXT_ENCODER_FIELDS:
            arr = getattr(self, name)
            if arr.shape != (b, le) or b2 != b:
                raise ValueError(f"Batch.{name}: expected shape {(b, le)}, got {arr.shape}")
        if self.images is not None:
            ni = self.images.shape[1]
            for name in IMAGE_FIELDS[1:]:
                arr = getattr(self, name)
                if arr is None or arr.shape[:2] != (b, ni):
                    raise ValueError(f"Batch.{name}: expected leading shape {(b, ni)}")
        for name, dtype in FIELD_DTYPES.items():
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.dtype != dtype:
                raise ValueError(f"Batch.{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
        if bank is None and self.images is None:
            bank = SlotBank(le)
        if bank is not None:
            try:
                bank.check(np.asarray(self.slot_index))
            except ValueError as e:
                raise ValueError(f"Batch.slot_index: {e}") from None


# -- errors a person fixes ------------------------------------------------------------------
# Raised by validation throughout the package; the command lines (metalm_jax/cli.py) end with
# their one-line message and exit 2, and keep the traceback for every other exception. Each also
# derives from the builtin type raised before, so callers catching those keep working.


class UserError(Exception):
    """Something the user can fix; the message names what and where, on one line."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (names the key and the fix)."""


class DataError(UserError, ValueError):
    """Input data that cannot be read or used (names the file, and the line where known)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not match the config, or no usable checkpoint."""


USER_ERRORS = (UserError, FileNotFoundError)  # a missing file: its message names the path
