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

from metalm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def build_icl_row(demos, query, option, seq_len: int, enc_len: int) -> dict:
    """demos: [(input_ids, label_ids)], query: input_ids, option: completion ids -> Batch row.

    Raises ValueError naming what does not fit (decoder row or encoder grid).
    """
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
        first = len(enc_tokens) + 1
        enc_tokens.extend([BOS_ID] + ids)
        enc_seg.extend([seg] * (len(ids) + 1))
        enc_pos.extend(range(len(ids) + 1))
        tokens.extend(ids)
        slots.extend(range(first, first + len(ids)))
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
    m = len(enc_tokens)
    row["enc_tokens"][:m] = enc_tokens
    row["enc_segment_ids"][:m] = enc_seg
    row["enc_positions"][:m] = enc_pos
    return row


def sample_demos(pool, k: int, rng: np.random.Generator, exclude=None) -> list:
    """k demonstrations drawn without replacement from `pool` (never the `exclude` item)."""
    idx = [i for i in range(len(pool)) if pool[i] is not exclude]
    return [pool[idx[j]] for j in rng.choice(len(idx), size=k, replace=False)] if k else []
