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
"""

from __future__ import annotations

import dataclasses

import flax.struct
import numpy as np

DECODER_FIELDS = ("tokens", "slot_index", "targets", "loss_weights", "segment_ids", "positions")
TEXT_ENCODER_FIELDS = ("enc_tokens", "enc_segment_ids", "enc_positions")
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
}


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

    @classmethod
    def from_dict(cls, d: dict) -> Batch:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise KeyError(f"Batch is missing fields {missing}; got {sorted(d)}")
        return cls(**{n: d[n] for n in names})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        """Checks shapes and dtypes against the contract; raises ValueError naming the field."""
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
        for name, dtype in FIELD_DTYPES.items():
            arr = getattr(self, name)
            if arr.dtype != dtype:
                raise ValueError(f"Batch.{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
        if np.any(self.slot_index >= le):
            raise ValueError(f"Batch.slot_index points past the encoder length {le}")
