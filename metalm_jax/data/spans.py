"""Semi-causal span sampling and the Eq. 1 loss weights, pure numpy (no jax).

Given a packed row (tokens, segment_ids, positions), choose non-overlapping spans that the text
encoder will encode bidirectionally; the decoder sees encoder slots there instead of tokens.

Policy (PAPER.md §2.1-2.2):
  * span lengths uniform in [min_len, max_len], about `ratio` of the row's tokens in spans;
  * a span never crosses a document (segment); it starts after the segment's first token and
    ends before its last, so the position before it and the token after it are in the document;
  * spans are separated by at least one text token.

Loss weights per Eq. 1. For a span covering x_s .. x_{e-1}:
  * position s-1 (text) predicts x_s, the span's first token     (weight 1)
  * positions s .. e-2 (slots) predict nothing                    (weight 0)
  * position e-1 (the span's last slot) predicts x_e              (weight 1)
  * every other position predicts the next token of its segment; the last token of a segment
    and padding predict nothing.

Worked example (one document, L = 10, span [3, 6) = x3 x4 x5):

    position      0    1   2   3    4    5    6   7   8   9
    tokens       <s>  x1  x2  x3   x4   x5   x6  x7  x8  </d>
    slot_index   -1   -1  -1   1    2    3   -1  -1  -1  -1
    targets      x1   x2  x3  x4   x5   x6   x7  x8  </d>  0
    loss_weights  1    1   1   0    0    1    1   1   1    0

    enc_tokens       <s> x3 x4 x5 <pad> ...   (the encoder's own <s>, output not used)
    enc_segment_ids   1   1  1  1   0
    enc_positions     0   1  2  3   0

`slot_index` points into the row's slot bank, which is the connector applied to the encoder
grid, so slot 1 is the encoder output at x3.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools

import numpy as np

from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds
from metalm_jax.types import ConfigError


@dataclasses.dataclass(frozen=True)
class SpanConfig:
    min_len: int = 64
    max_len: int = 128
    ratio: float = 0.25
    enc_length: int = 640  # Le: encoder grid length per row (spans packed, each with its <s>)
    enc_bos: bool = True  # give each span a leading <s> in the encoder (PAPER.md §7)
    max_attempts: int = 64
    ids: SpecialIds = SENTENCEPIECE_IDS  # the decoder tokenizer's (<pad> fills, <s> per span)

    def __post_init__(self):
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(
                f"spans: need 1 <= min_len <= max_len, got min_len={self.min_len}, "
                f"max_len={self.max_len}"
            )
        if self.max_len + int(self.enc_bos) > self.enc_length:
            raise ConfigError(
                f"spans.max_len={self.max_len} (+{int(self.enc_bos)} for <s>) is longer than the "
                f"encoder grid enc_length={self.enc_length}: lower spans.max_len or raise "
                "spans.enc_length"
            )
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"spans.ratio must be in [0, 1), got {self.ratio}")


def segment_bounds(segment_ids: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end), ...] of the non-padding segments (runs of one nonzero id) of one row."""
    seg = np.asarray(segment_ids)
    if len(seg) == 0:
        return []
    change = np.flatnonzero(seg[1:] != seg[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(seg)]])
    keep = seg[starts] != 0
    return list(zip(starts[keep].tolist(), ends[keep].tolist(), strict=True))


def sample_spans(segment_ids: np.ndarray, rng: np.random.Generator, cfg: SpanConfig):
    """Chooses spans [(s, e), ...] sorted by s, following the module's policy."""
    bounds = [(a, b) for a, b in segment_bounds(segment_ids) if (b - a) >= cfg.min_len + 2]
    n_tokens = int(np.sum(segment_ids > 0))
    target = int(round(cfg.ratio * n_tokens))
    spans: list[tuple[int, int]] = []
    total, enc_used = 0, 0
    if not bounds or target < cfg.min_len:
        return spans
    room = [float(b - a - 2) for a, b in bounds]
    for _ in range(cfg.max_attempts):
        if total >= target:
            break
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        length = max(cfg.min_len, min(length, target - total))
        p = [r - length + 1 if r >= length else 0.0 for r in room]
        if not any(p):  # no segment has room for the span
            continue
        a, b = bounds[_choice(rng, p)]
        s = int(rng.integers(a + 1, b - 1 - length + 1))
        e = s + length
        if any(s <= pe and ps <= e for ps, pe in spans):  # keep >= 1 text token between spans
            continue
        if enc_used + length + int(cfg.enc_bos) > cfg.enc_length:
            continue
        spans.append((s, e))
        total += length
        enc_used += length + int(cfg.enc_bos)
    return sorted(spans)


def _choice(rng: np.random.Generator, weights: list[float]) -> int:
    """`int(rng.choice(len(weights), p=w / w.sum()))` for w = float64 `weights` (whole numbers,
    not all 0), the same draw from the same generator state, without numpy's per-call checks
    (a few small lists instead of ~40 us; the span loop makes up to max_attempts of them).
    numpy draws one uniform and looks it up in the normalized cumulative sum of p (side
    "right"); tests/test_spans.py holds the two to the same results."""
    total = sum(weights)  # exact: whole numbers, as numpy's p.sum()
    p = [w / total for w in weights]
    cdf = list(itertools.accumulate(p))
    cdf = [c / cdf[-1] for c in cdf]
    return bisect.bisect_right(cdf, rng.random())


def next_token_targets(
    tokens: np.ndarray, segment_ids: np.ndarray, pad: int = SENTENCEPIECE_IDS.pad
):
    """Next-token targets and weights that never cross a segment; padding has weight 0 (and
    the target `pad`, the tokenizer's <pad>)."""
    targets = np.zeros_like(tokens)
    targets[:-1] = tokens[1:]
    same = np.zeros(len(tokens), bool)
    same[:-1] = (segment_ids[1:] == segment_ids[:-1]) & (segment_ids[:-1] > 0)
    return np.where(same, targets, pad).astype(np.int32), same.astype(np.float32)


class SharedEncoding:
    """The text encoder reads the decoder's own token ids: a span x_s..x_{e-1} is encoded as
    [<s>] x_s..x_{e-1} and its slots are the encoder outputs at x_s..x_{e-1} (one per token,
    so the decoder row keeps its length). `ids`: the decoder tokenizer's special ids; its
    <s> leads a span and its <pad> (`pad`) fills the encoder grid."""

    exact = True

    def __init__(self, enc_bos: bool = True, ids: SpecialIds = SENTENCEPIECE_IDS):
        self.enc_bos = enc_bos
        self.bos = ids.bos
        self.pad = ids.pad

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """(encoder ids, index of the first slot's vector); slots = len(ids)."""
        if self.enc_bos:
            return np.concatenate([[self.bos], ids]).astype(np.int32), 1
        return np.asarray(ids, np.int32), 0


class RetokenizedEncoding:
    """A pretrained encoder with its own tokenizer (a Hugging Face tokenizer.json, e.g. BERT
    WordPiece): the span's text (decoded from the decoder tokenizer's ids, paragraphs
    joined by the encoder's [SEP]) is tokenized again with the encoder's special tokens
    ([CLS] ... [SEP]) and every vector the encoder returns becomes a decoder slot, so a span
    of n decoder tokens may take m != n slots (DESIGN.md, slot bank). Spans longer than
    `max_len` encoder tokens are cut there (keeping the final special token)."""

    exact = False

    def __init__(self, path: str, decoder_tokenizer, max_len: int):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.tokenizer = HFTokenizer.from_file(path)
        except Exception as e:  # noqa: BLE001 - the library raises plain Exceptions
            raise ConfigError(
                f"model.text_encoder.tokenizer: cannot read {path} as a Hugging Face "
                f"tokenizer.json ({e})"
            ) from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.path = path
        self.decoder = decoder_tokenizer
        self.max_len = max_len
        sep_id = self.tokenizer.token_to_id("[SEP]")
        as_text = self.tokenizer.encode("[SEP]", add_special_tokens=False).ids
        self.sep = "[SEP]" if sep_id is not None and as_text == [sep_id] else ""
        # the encoder grid's fill must be an id of the encoder's own vocabulary (the decoder's
        # <pad> may lie past its embedding table)
        pads = (self.tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>"))
        self.pad = next((i for i in pads if i is not None), 0)
        self.vocab_size = self.tokenizer.get_vocab_size()

    def text(self, ids: np.ndarray) -> str:
        """The span's text: paragraphs (split at </s>) decoded and joined by [SEP]."""
        parts, cur = [], []
        for i in ids:
            if int(i) == self.decoder.eos:
                parts.append(cur)
                cur = []
            else:
                cur.append(int(i))
        parts.append(cur)
        texts = [t for t in (self.decoder.decode(p).strip() for p in parts if p) if t]
        return f" {self.sep} ".join(texts) if self.sep else " ".join(texts)

    def encode_text(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.max_len:
            ids = ids[: self.max_len - 1] + ids[-1:]
        return np.asarray(ids, np.int32)

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        return self.encode_text(self.text(ids)), 0


def build_example(row: dict, spans, cfg: SpanConfig, encoding=None) -> dict:
    """Packed row + chosen spans -> one row of the Batch contract (see metalm_jax.types).

    `encoding` turns a span's decoder ids into encoder ids (default: SharedEncoding, one slot
    per token). With a re-tokenizing encoding a span takes as many slots as the encoder returns
    vectors, so the row is rebuilt: text, slots, text, ...; positions restart per document as
    before; a span whose encoder ids do not fit the encoder grid, or whose slots would run past
    the row, stays text; what runs past the row's end is cut, a shorter row is padded.
    """
    pad = cfg.ids.pad
    encoding = encoding or SharedEncoding(cfg.enc_bos, cfg.ids)
    tokens, seg = row["tokens"], row["segment_ids"]
    L = len(tokens)
    targets, weights = next_token_targets(tokens, seg, pad)
    # the rebuilt row as pieces of (tokens, slot_index, targets, loss_weights, segment_ids)
    parts: list[tuple] = []
    enc_tokens = np.full(cfg.enc_length, encoding.pad, np.int32)
    enc_seg = np.zeros(cfg.enc_length, np.int32)
    enc_pos = np.zeros(cfg.enc_length, np.int32)

    def text(a, b):
        parts.append((tokens[a:b], np.full(b - a, -1), targets[a:b], weights[a:b], seg[a:b]))

    off, k, prev, used = 0, 0, 0, 0  # used: decoder positions taken so far
    for s, e in spans:
        if seg[s - 1] != seg[s] or seg[e] != seg[s] or np.any(seg[s:e] != seg[s]):
            raise ValueError(f"span ({s}, {e}) crosses a document boundary")
        piece, first = encoding(tokens[s:e])
        n, m = len(piece), len(piece) - first  # encoder positions, decoder slots
        if off + n > cfg.enc_length or used + (s - prev) + m > L:
            if encoding.exact:
                raise ConfigError(
                    f"spans need {off + n} encoder positions, enc_length={cfg.enc_length}"
                )
            continue  # this span stays text
        k += 1
        text(prev, s)
        enc_tokens[off : off + n] = piece
        enc_seg[off : off + n] = k
        enc_pos[off : off + n] = np.arange(n)
        # only the last slot predicts x_e (Eq. 1); inner slots carry no loss
        tgt = targets[s:e].copy() if encoding.exact else np.full(m, pad)
        tgt[-1] = targets[e - 1]
        w = np.zeros(m, np.float32)
        w[-1] = weights[e - 1]
        slots_tok = tokens[s:e] if encoding.exact else np.full(m, pad)
        parts.append(
            (slots_tok, np.arange(off + first, off + first + m), tgt, w, np.full(m, seg[s]))
        )
        used += (s - prev) + m
        off += n
        prev = e
    text(prev, L)
    fills = (pad, -1, pad, 0.0, 0)
    types = (np.int32, np.int32, np.int32, np.float32, np.int32)
    cols = []
    for i, (fill, dt) in enumerate(zip(fills, types, strict=True)):
        col = np.concatenate([p[i] for p in parts])[:L]
        out = np.full(L, fill, dt)  # what runs short of L is padded with `fill`
        out[: len(col)] = col
        cols.append(out)
    out_tok, out_slot, out_tgt, out_w, out_seg = cols
    return {
        "tokens": out_tok,
        "slot_index": out_slot,
        "targets": out_tgt,
        "loss_weights": out_w,
        "segment_ids": out_seg,
        "positions": positions_in_segments(out_seg),
        "enc_tokens": enc_tokens,
        "enc_segment_ids": enc_seg,
        "enc_positions": enc_pos,
    }


def positions_in_segments(segment_ids: np.ndarray) -> np.ndarray:
    """int32 position of each token within its run of equal segment ids (0 for padding)."""
    seg = np.asarray(segment_ids)
    if len(seg) == 0:
        return np.zeros(0, np.int32)
    idx = np.arange(len(seg))
    starts = np.ones(len(seg), bool)
    starts[1:] = seg[1:] != seg[:-1]
    pos = idx - np.maximum.accumulate(np.where(starts, idx, 0))
    return np.where(seg != 0, pos, 0).astype(np.int32)


def semi_causal_example(
    row: dict, rng: np.random.Generator, cfg: SpanConfig, encoding=None
) -> dict:
    """Samples spans for a packed row and returns the Batch-contract row."""
    return build_example(row, sample_spans(row["segment_ids"], rng, cfg), cfg, encoding)
