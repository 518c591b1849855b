"""The one row language (DESIGN.md, "Downstream"): examples as pieces -> Batch rows, pure numpy.

A piece is one of
  Enc(ids)             a text input, encoded by the text encoder as its own encoder segment; its
                       outputs take decoder slots (one per vector the encoder returns)
  Image(pixels, ids)   an image with an optional text prefix, encoded by the (joint) vision
                       encoder; its outputs take decoder slots: S image slots, then one per
                       prefix token (the prefix's ids sit under those slots)
  Text(ids)            decoder tokens, no loss
  Target(ids)          decoder tokens with loss: each predicted from the position before it
                       (the first from the last slot or text token before the target)

An example is a list of pieces and becomes one segment of a row: `<s>` then its pieces, attention
isolated from the row's other examples (segment ids), positions restarting at 0. `RowBuilder`
packs examples into one row until the next does not fit (decoder row, encoder grid or images);
its slot indices come from the row's types.SlotBank (the text-encoder grid first, then S' = S + Lp
entries per image) and every finished row is checked against it. `RowFormat` is what a model asks
of its rows, derived once from the config (model/build.derive) and handed to the data code.

Worked example: two packed examples, L = 16, text encoder with SharedEncoding (<s> + ids):

    example 1: [Enc(a b), Target(P </s>)]    example 2: [Enc(c), Text(x), Target(Q </s>)]

    position     0    1    2   3   4     5    6    7   8   9   10 ...
    tokens      <s>   a    b   P  </s>  <s>   c    x   Q  </s> pad
    slot_index  -1    1    2  -1  -1    -1    4   -1  -1  -1   -1
    targets      .    .    P  </s> .     .    .    Q  </s>  .   .
    loss_weight  0    0    1   1   0     0    0    1   1   0    0
    segment_ids  1    1    1   1   1     2    2    2   2   2    0
    positions    0    1    2   3   4     0    1    2   3   4    0

    enc_tokens       <s> a b <s> c      enc_segment_ids  1 1 1 2 2      enc_positions  0 1 2 0 1

The same builder makes semi-supervised finetuning rows (data/tasks/task_rows.py), k-shot prompts
(eval/prompts.py: k finished examples [Enc(input), Text(label </s>)] and a query
[Enc(input), Target(option)] in one segment) and VL pretraining rows (data/pretrain/vl_rows.py:
an image-caption pair is [Image(pixels, caption[:k]), Target(caption[k:])]). `ImageLayout`, how
a row holds images, is defined here with the builder that lays them out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metalm_jax.data.spans import SharedEncoding, SpanConfig
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds
from metalm_jax.types import ConfigError, SlotBank


@dataclasses.dataclass(frozen=True)
class Enc:
    ids: object  # int sequence: the input in the decoder tokenizer's ids


@dataclasses.dataclass(frozen=True)
class Image:
    pixels: np.ndarray  # uint8[H, W, 3] (data/images.preprocess; normalized on the device)
    prefix: object = ()  # int sequence: the joint VL encoder's text prefix (<= layout.prefix_len)


@dataclasses.dataclass(frozen=True)
class Text:
    ids: object


@dataclasses.dataclass(frozen=True)
class Target:
    ids: object


class DoesNotFit(ValueError):
    """An example does not fit into an empty row; the message names what and the config keys."""


@dataclasses.dataclass
class _Piece:
    tokens: np.ndarray
    slots: np.ndarray
    is_target: bool


@dataclasses.dataclass(frozen=True)
class ImageLayout:
    """How a model's rows hold images (derived once with the RowFormat, model/build.derive):
    images per row, decoder slots per image, the joint VL encoder's text prefix, pixel size
    (pixels stay uint8; their normalization is the model's, model/vision.VisionConfig). It
    lives with the row builder, which lays images out by it; the image-text pretraining rows
    (data/pretrain/vl_rows.py) and the evaluators' prompts use it too."""

    seq_len: int  # decoder row length L
    images_per_row: int  # Ni
    image_slots: int  # S: decoder slots for the image itself
    prefix_len: int  # Lp: prefix positions the encoder reads (0 = vision-only encoder)
    # The bank's text part and the Batch's encoder grid are one length Le with a text encoder;
    # without one the grid keeps its Le (every row of a batch has one shape) and the bank none.
    text_bank: int  # Le when a text encoder precedes the images in the bank, else 0
    image_size: int
    enc_length: int  # text-encoder grid length Le of the Batch (empty for image rows)

    @property
    def slots_per_image(self) -> int:
        return self.image_slots + self.prefix_len

    @property
    def bank(self) -> SlotBank:
        """The slot bank of a row (types.py): the text grid, then S' slots per image."""
        return SlotBank(self.text_bank, self.slots_per_image, self.images_per_row)

    def pair_length(self, caption_len: int) -> int:
        """Decoder positions an image-text pair takes: <s>, image slots, every caption token."""
        return 1 + self.image_slots + caption_len


def empty_image_fields(layout: ImageLayout, rows: int | None = None) -> dict:
    """The image fields of a row (or of `rows` rows) that holds no image: zeros (uint8 pixels,
    types.py), image_valid 0."""
    lead = () if rows is None else (rows,)
    n, s, lp = layout.images_per_row, layout.image_size, max(layout.prefix_len, 1)
    return {
        "images": np.zeros((*lead, n, s, s, 3), np.uint8),
        "image_valid": np.zeros((*lead, n), np.int32),
        "vl_prefix": np.zeros((*lead, n, lp), np.int32),
        "vl_prefix_mask": np.zeros((*lead, n, lp), np.int32),
    }


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """The rows one model reads: derived once from the config at the top of a run
    (model/build.derive) and passed down, so the data code never reads the model section."""

    seq_len: int  # decoder row length L (data.seq_len)
    spans: SpanConfig  # spans.enc_length is the encoder grid Le; ratio 0 without a text encoder
    encoding: object = None  # how text becomes encoder ids (data/spans.py; None: SharedEncoding)
    layout: ImageLayout | None = None  # with a vision encoder and images, else None
    text_encoder: bool = True  # False: inputs are decoder text (the GPT baseline)

    def builder(self, seq_len: int | None = None) -> RowBuilder:
        """An empty RowBuilder for these rows (`seq_len`: another decoder length, e.g. an
        evaluation's)."""
        return RowBuilder(
            seq_len or self.seq_len,
            self.spans.enc_length,
            self.encoding,
            self.layout,
            ids=self.spans.ids,
        )


class RowBuilder:
    """Packs examples (lists of pieces) into one Batch row of `seq_len` decoder positions, an
    encoder grid of `enc_length`, and (with an ImageLayout) up to layout.images_per_row images.

    `encoding` turns an Enc piece's ids into encoder ids (data/spans.py: SharedEncoding by
    default, RetokenizedEncoding for an encoder with its own tokenizer); `ids`: the decoder
    tokenizer's special ids (<s> starts each example, <pad> fills)."""

    def __init__(
        self,
        seq_len: int,
        enc_length: int,
        encoding=None,
        layout=None,
        ids: SpecialIds = SENTENCEPIECE_IDS,
    ):
        self.seq_len = seq_len
        self.enc_length = enc_length
        self.ids = ids
        self.encoding = encoding or SharedEncoding(True, ids)
        self.layout = layout
        self.bank = layout.bank if layout is not None else SlotBank(enc_length)
        self.examples: list[list[_Piece]] = []
        self.enc: list[np.ndarray] = []  # encoder segments, in grid order
        self.images: list[Image] = []
        self.used = 0

    @property
    def empty(self) -> bool:
        return not self.examples

    def _plan(self, pieces):
        """The example's decoder pieces and the encoder segments / images it adds, or raises
        DoesNotFit with what runs over."""
        out, enc, images = [], [], []
        enc_off = sum(len(e) for e in self.enc)
        n_images = len(self.images)
        length = 1  # <s>
        for p in pieces:
            if isinstance(p, Text | Target):
                ids = np.asarray(p.ids, np.int32).reshape(-1)
                out.append(_Piece(ids, np.full(len(ids), -1, np.int32), isinstance(p, Target)))
            elif isinstance(p, Enc):
                ids = np.asarray(p.ids, np.int32).reshape(-1)
                piece, first = self.encoding(ids)
                m = len(piece) - first
                start = enc_off + first
                enc_off += len(piece)
                enc.append(piece)
                tokens = ids if self.encoding.exact else np.full(m, self.ids.pad, np.int32)
                fits = enc_off <= self.enc_length  # else DoesNotFit below names the overrun
                slots = self.bank.text_slots(start, m) if fits else np.full(m, -1, np.int32)
                out.append(_Piece(tokens, slots, False))
            elif isinstance(p, Image):
                lay = self.layout
                if lay is None:
                    raise ConfigError(
                        "an image input needs a model with a vision encoder (model.vision)"
                    )
                prefix = np.asarray(p.prefix, np.int32).reshape(-1)
                pixels = np.asarray(p.pixels)
                if pixels.dtype != np.uint8 or pixels.shape != (lay.image_size, lay.image_size, 3):
                    raise ValueError(
                        f"an image input must be uint8[{lay.image_size}, {lay.image_size}, 3] "
                        f"pixels (data/images.preprocess), got {pixels.dtype}{list(pixels.shape)}"
                    )
                if len(prefix) > lay.prefix_len:
                    raise DoesNotFit(
                        f"an image's text prefix of {len(prefix)} tokens is longer than the "
                        f"vision encoder's prefix (model.vision.text_prefix={lay.prefix_len})"
                    )
                if n_images + len(images) >= lay.images_per_row:
                    raise DoesNotFit(
                        f"the example needs image {len(images) + 1}; a row holds "
                        f"{lay.images_per_row} (images.images_per_row)"
                    )
                slots = self.bank.image_slots(n_images + len(images), lay.image_slots + len(prefix))
                tokens = np.concatenate([np.full(lay.image_slots, self.ids.pad, np.int32), prefix])
                out.append(_Piece(tokens, slots, False))
                images.append(p)
            else:
                raise TypeError(f"unknown row piece {p!r}")
            length += len(out[-1].tokens)
        problems = []
        if self.used + length > self.seq_len:
            problems.append(f"{length} decoder positions (rows hold {self.seq_len})")
        if enc_off > self.enc_length:
            problems.append(
                f"{enc_off - sum(len(e) for e in self.enc)} encoder positions (the grid holds "
                f"{self.enc_length})"
            )
        if problems:
            raise DoesNotFit("the example needs " + ", ".join(problems))
        return out, enc, images, length

    def add(self, pieces) -> bool:
        """Adds an example as the row's next segment; False (row unchanged) if it does not fit
        in what is left. An example that cannot fit even an empty row raises DoesNotFit."""
        try:
            out, enc, images, length = self._plan(pieces)
        except DoesNotFit:
            if self.empty:
                raise
            return False
        self.examples.append(out)
        self.enc += enc
        self.images += images
        self.used += length
        return True

    def row(self) -> dict:
        """The Batch row (dict of numpy arrays; image fields when there is a layout)."""
        L, Le = self.seq_len, self.enc_length
        tokens = np.full(L, self.ids.pad, np.int32)
        slots = np.full(L, -1, np.int32)
        targets = np.full(L, self.ids.pad, np.int32)
        weights = np.zeros(L, np.float32)
        seg = np.zeros(L, np.int32)
        pos = np.zeros(L, np.int32)
        off = 0
        for k, pieces in enumerate(self.examples, 1):
            start = off
            tokens[off] = self.ids.bos
            off += 1
            for p in pieces:
                n = len(p.tokens)
                tokens[off : off + n] = p.tokens
                slots[off : off + n] = p.slots
                if p.is_target and n:
                    targets[off - 1 : off + n - 1] = p.tokens
                    weights[off - 1 : off + n - 1] = 1.0
                off += n
            seg[start:off] = k
            pos[start:off] = np.arange(off - start)
        self.bank.check(slots)  # cheap, and the model's gather would clip silently
        enc_tokens = np.full(Le, self.encoding.pad, np.int32)  # the encoder's own <pad>
        enc_seg = np.zeros(Le, np.int32)
        enc_pos = np.zeros(Le, np.int32)
        e = 0
        for k, piece in enumerate(self.enc, 1):
            enc_tokens[e : e + len(piece)] = piece
            enc_seg[e : e + len(piece)] = k
            enc_pos[e : e + len(piece)] = np.arange(len(piece))
            e += len(piece)
        row = {
            "tokens": tokens,
            "slot_index": slots,
            "targets": targets,
            "loss_weights": weights,
            "segment_ids": seg,
            "positions": pos,
            "enc_tokens": enc_tokens,
            "enc_segment_ids": enc_seg,
            "enc_positions": enc_pos,
        }
        if self.layout is not None:
            img = empty_image_fields(self.layout)
            for i, p in enumerate(self.images):
                prefix = np.asarray(p.prefix, np.int32).reshape(-1)
                img["images"][i] = p.pixels
                img["image_valid"][i] = 1
                img["vl_prefix"][i, : len(prefix)] = prefix
                img["vl_prefix_mask"][i, : len(prefix)] = 1
            row.update(img)
        return row


def build_row(
    examples, seq_len: int, enc_length: int, encoding=None, layout=None, ids=SENTENCEPIECE_IDS
) -> dict:
    """All `examples` in one row, or DoesNotFit naming what runs over."""
    b = RowBuilder(seq_len, enc_length, encoding, layout, ids)
    for i, ex in enumerate(examples):
        if not b.add(ex):
            raise DoesNotFit(
                f"{len(examples)} examples do not fit one row: example {i} runs over "
                f"(rows of {seq_len}, encoder grid {enc_length})"
            )
    return b.row()
