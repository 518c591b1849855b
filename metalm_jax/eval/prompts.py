"""In-context prompts in the paper's form (PAPER.md §4.2, Fig. 4d), as Batch rows, pure numpy.

Each demonstration's *input* is encoded separately by the text encoder (its own segment in the
encoder grid, with its own <s>, positions restarting) and occupies decoder slots; its *label* is
plain decoder tokens; examples are separated by </s>. The query's input is encoded the same way
and the candidate completion follows as decoder tokens:

    decoder:  <s> [slots: input 1] label 1 </s> [slots: input 2] label 2 </s> [slots: query] option
    encoder:  <s> input 1 | <s> input 2 | <s> query            (one segment each)

The loss weights mark exactly the option's tokens (each predicted from the position before it),
so the weighted NLL of a row is the option's negative log-likelihood (rank classification).
"""

from __future__ import annotations

import numpy as np

from metalm_jax.data.spans import SharedEncoding
from metalm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def build_icl_row(demos, query, option, seq_len: int, enc_len: int, encoding=None) -> dict:
    """demos: [(input_ids, label_ids)], query: input_ids, option: completion ids -> Batch row.

    `encoding` turns an input's decoder ids into encoder ids as in training (data/spans.py:
    SharedEncoding by default; a RetokenizedEncoding for an encoder with its own tokenizer,
    whose inputs then take as many slots as it returns vectors).
    Raises ValueError naming what does not fit (decoder row or encoder grid).
    """
    encoding = encoding or SharedEncoding(True)
    pieces = []
    for inp, label in demos:
        pieces.append(("enc", list(inp)))
        pieces.append(("dec", list(label) + [EOS_ID]))
    pieces.append(("enc", list(query)))
    tokens, slots = [BOS_ID], [-1]
    enc_tokens, enc_seg, enc_pos = [], [], []
    for kind, ids in pieces:
        if kind == "dec":
            tokens.extend(ids)
            slots.extend([-1] * len(ids))
            continue
        seg = enc_seg[-1] + 1 if enc_seg else 1
        piece, first = encoding(np.asarray(ids, np.int32))
        n = len(piece) - first  # decoder slots: one per encoder vector after `first`
        first += len(enc_tokens)
        enc_tokens.extend(piece.tolist())
        enc_seg.extend([seg] * len(piece))
        enc_pos.extend(range(len(piece)))
        tokens.extend(ids if encoding.exact else [PAD_ID] * n)
        slots.extend(range(first, first + n))
    prompt_len = len(tokens)
    tokens.extend(option)
    slots.extend([-1] * len(option))
    n = len(tokens)
    if n > seq_len:
        raise ValueError(f"in-context prompt needs {n} decoder positions, rows have {seq_len}")
    if len(enc_tokens) > enc_len:
        raise ValueError(
            f"in-context prompt needs {len(enc_tokens)} encoder positions, "
            f"the encoder grid has {enc_len}"
        )
    row = _decoder_row(tokens, slots, prompt_len, option, seq_len, enc_len)
    m = len(enc_tokens)
    row["enc_tokens"][:m] = enc_tokens
    row["enc_segment_ids"][:m] = enc_seg
    row["enc_positions"][:m] = enc_pos
    return row


def _decoder_row(tokens, slots, prompt_len, option, seq_len, enc_len) -> dict:
    """One single-segment Batch row: `tokens` / `slots` from position 0, the option's tokens
    (the last len(option) of `tokens`) scored from the position before each; an empty encoder
    grid of `enc_len` for the caller to fill."""
    n = len(tokens)
    row = {
        "tokens": np.full(seq_len, PAD_ID, np.int32),
        "slot_index": np.full(seq_len, -1, np.int32),
        "targets": np.zeros(seq_len, np.int32),
        "loss_weights": np.zeros(seq_len, np.float32),
        "segment_ids": np.zeros(seq_len, np.int32),
        "positions": np.zeros(seq_len, np.int32),
        "enc_tokens": np.full(enc_len, PAD_ID, np.int32),
        "enc_segment_ids": np.zeros(enc_len, np.int32),
        "enc_positions": np.zeros(enc_len, np.int32),
    }
    row["tokens"][:n] = tokens
    row["slot_index"][:n] = slots
    row["segment_ids"][:n] = 1
    row["positions"][:n] = np.arange(n)
    row["targets"][prompt_len - 1 : n - 1] = option
    row["loss_weights"][prompt_len - 1 : n - 1] = 1.0
    return row


def build_vqa_row(demos, query, option, layout) -> dict:
    """Few-shot VQA in the paper's form: every image is encoded with its question as the joint
    VL encoder's text prefix (one image slot group per example), answers are decoder tokens,
    examples end in </s>; the option follows the query's slots and is what the weights score.

    demos: [(image float32[H, W, 3], question ids, answer ids)], query: (image, question ids),
    layout: an ImageLayout whose images_per_row >= len(demos) + 1 (prefix_len >= questions).

        <s> [img 1][q 1] a 1 </s> [img 2][q 2] a 2 </s> [img q][q q] option
    """
    from metalm_jax.data.vl import empty_image_fields

    examples = [(img, q, list(a) + [EOS_ID]) for img, q, a in demos] + [(*query, list(option))]
    if len(examples) > layout.images_per_row:
        raise ValueError(f"{len(examples)} images for a layout of {layout.images_per_row}")
    L, S = layout.seq_len, layout.image_slots
    tokens, slots = [BOS_ID], [-1]
    out = empty_image_fields(layout)
    prompt_len = 0
    for i, (img, q, a) in enumerate(examples):
        q = list(q)
        if len(q) > layout.prefix_len:
            raise ValueError(
                f"question of {len(q)} tokens, the encoder prefix holds {layout.prefix_len}"
            )
        base = layout.text_bank + i * layout.slots_per_image
        tokens += [PAD_ID] * S + q
        slots += list(range(base, base + S + len(q)))
        out["images"][i] = img
        out["image_valid"][i] = 1
        out["vl_prefix"][i, : len(q)] = q
        out["vl_prefix_mask"][i, : len(q)] = 1
        if i == len(examples) - 1:
            prompt_len = len(tokens)
        tokens += a
        slots += [-1] * len(a)
    n = len(tokens)
    if n > L:
        raise ValueError(f"few-shot VQA prompt needs {n} decoder positions, rows have {L}")
    return {**_decoder_row(tokens, slots, prompt_len, option, L, layout.enc_length), **out}
