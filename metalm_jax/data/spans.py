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

import dataclasses

import numpy as np

from metalm_jax.data.tokenizer import BOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class SpanConfig:
    min_len: int = 64
    max_len: int = 128
    ratio: float = 0.25
    enc_length: int = 640  # Le: encoder grid length per row (spans packed, each with its <s>)
    enc_bos: bool = True  # give each span a leading <s> in the encoder (PAPER.md §7)
    max_attempts: int = 64

    def __post_init__(self):
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(
                f"spans: need 1 <= min_len <= max_len, got min_len={self.min_len}, "
                f"max_len={self.max_len}"
            )
        if self.max_len + int(self.enc_bos) > self.enc_length:
            raise ValueError(
                f"spans.max_len={self.max_len} (+{int(self.enc_bos)} for <s>) is longer than the "
                f"encoder grid enc_length={self.enc_length}: lower spans.max_len or raise "
                "spans.enc_length"
            )
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"spans.ratio must be in [0, 1), got {self.ratio}")


def segment_bounds(segment_ids: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end), ...] of the non-padding segments of one row."""
    bounds, n = [], len(segment_ids)
    i = 0
    while i < n:
        if segment_ids[i] == 0:
            i += 1
            continue
        j = i
        while j < n and segment_ids[j] == segment_ids[i]:
            j += 1
        bounds.append((i, j))
        i = j
    return bounds


def sample_spans(segment_ids: np.ndarray, rng: np.random.Generator, cfg: SpanConfig):
    """Chooses spans [(s, e), ...] sorted by s, following the module's policy."""
    bounds = [(a, b) for a, b in segment_bounds(segment_ids) if (b - a) >= cfg.min_len + 2]
    n_tokens = int(np.sum(segment_ids > 0))
    target = int(round(cfg.ratio * n_tokens))
    spans: list[tuple[int, int]] = []
    total, enc_used = 0, 0
    if not bounds or target < cfg.min_len:
        return spans
    room = np.array([b - a - 2 for a, b in bounds], np.float64)
    for _ in range(cfg.max_attempts):
        if total >= target:
            break
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        length = max(cfg.min_len, min(length, target - total))
        fits = room >= length
        if not fits.any():
            continue
        p = np.where(fits, room - length + 1, 0.0)
        a, b = bounds[int(rng.choice(len(bounds), p=p / p.sum()))]
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


def next_token_targets(tokens: np.ndarray, segment_ids: np.ndarray):
    """Next-token targets and weights that never cross a segment; padding has weight 0."""
    targets = np.zeros_like(tokens)
    targets[:-1] = tokens[1:]
    same = np.zeros(len(tokens), bool)
    same[:-1] = (segment_ids[1:] == segment_ids[:-1]) & (segment_ids[:-1] > 0)
    return np.where(same, targets, PAD_ID).astype(np.int32), same.astype(np.float32)


def build_example(row: dict, spans, cfg: SpanConfig) -> dict:
    """Packed row + chosen spans -> one row of the Batch contract (see metalm_jax.types)."""
    tokens, seg = row["tokens"], row["segment_ids"]
    targets, weights = next_token_targets(tokens, seg)
    slot_index = np.full(len(tokens), -1, np.int32)
    enc_tokens = np.full(cfg.enc_length, PAD_ID, np.int32)
    enc_seg = np.zeros(cfg.enc_length, np.int32)
    enc_pos = np.zeros(cfg.enc_length, np.int32)
    off = 0
    for k, (s, e) in enumerate(spans, start=1):
        if seg[s - 1] != seg[s] or seg[e] != seg[s] or np.any(seg[s:e] != seg[s]):
            raise ValueError(f"span ({s}, {e}) crosses a document boundary")
        piece = tokens[s:e]
        if cfg.enc_bos:
            piece = np.concatenate([[BOS_ID], piece]).astype(np.int32)
        n = len(piece)
        if off + n > cfg.enc_length:
            raise ValueError(f"spans need {off + n} encoder positions, enc_length={cfg.enc_length}")
        enc_tokens[off : off + n] = piece
        enc_seg[off : off + n] = k
        enc_pos[off : off + n] = np.arange(n)
        first = off + int(cfg.enc_bos)
        slot_index[s:e] = np.arange(first, first + (e - s))
        weights[s : e - 1] = 0.0  # inner slots carry no loss; the last slot predicts x_e
        off += n
    return {
        "tokens": tokens.astype(np.int32),
        "slot_index": slot_index,
        "targets": targets,
        "loss_weights": weights,
        "segment_ids": seg.astype(np.int32),
        "positions": row["positions"].astype(np.int32),
        "enc_tokens": enc_tokens,
        "enc_segment_ids": enc_seg,
        "enc_positions": enc_pos,
    }


def semi_causal_example(row: dict, rng: np.random.Generator, cfg: SpanConfig) -> dict:
    """Samples spans for a packed row and returns the Batch-contract row."""
    return build_example(row, sample_spans(row["segment_ids"], rng, cfg), cfg)
