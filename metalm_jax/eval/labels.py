"""Short answers generated for prompt rows: what the evaluators that score a generated label or
answer (icl_classification, vqa, task, multitask) compare with their references.

A module of its own, below the evaluators that use it, so that each imports it rather than one
another (task_eval.py once reached into evaluators.py for it, and evaluators.py runs task_eval).
"""

from __future__ import annotations

import numpy as np


def generate_labels(trainer, params, tok, rows, ev, max_new: int = 3, sampling=None) -> list[str]:
    """Greedy (or `sampling`: a decode.SamplingConfig, e.g. beam search) continuations of prompt
    rows (built with an empty option), as text: the first line up to </s>. Rows are re-laid
    left-padded, as decode.generate needs; `ev.batch_size` rows go through at a time."""
    import jax

    from metalm_jax.eval import decode

    out = []
    for i in range(0, len(rows), ev.batch_size):
        batch = decode.left_pad_rows(rows[i : i + ev.batch_size], tok.pad)
        gen = decode.generate(
            trainer.model,
            params,
            batch,
            jax.random.key(0),
            max_new=max_new,
            cfg=sampling or decode.SamplingConfig(),
            stop_ids=(tok.eos,),
            pad_id=tok.pad,
        )
        out += [tok.decode([t for t in row if t != tok.eos]).strip() for row in np.asarray(gen)]
    return out
