"""What re-tokenized spans do to the rows, on the validation rows of a config: spans sampled vs
encoded, decoder tokens per sampled span vs slots (encoder vectors) per encoded span, encoder
grid use, and how much of the text survives (the rest is cut at the row's end).

    python benchmarks/span_stats.py [--config configs/tiny_minilm.py] [--workdir runs/tiny_minilm]

The workdir supplies the run's SentencePiece model (trained at the run's first start).
"""

from __future__ import annotations

import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny_minilm.py")
    ap.add_argument("--workdir", default="runs/tiny_minilm")
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()

    from metalm_jax.config import load_config_file
    from metalm_jax.data import tokenizer
    from metalm_jax.data.feed import pipeline
    from metalm_jax.data.pretrain.packed_rows import PackedRows
    from metalm_jax.data.spans import build_example, sample_spans
    from metalm_jax.model.build import span_config, span_encoding

    cfg = load_config_file(args.config)
    tok = tokenizer.saved(args.workdir, cfg.data.tokenizer_path)
    spans_cfg = span_config(cfg, tok.ids)
    enc = span_encoding(cfg, tok)
    rng = np.random.default_rng(0)
    docs = pipeline._documents(cfg, "validation", tok, (0, 1), None)
    s = dict(rows=0, sampled=0, encoded=0, span_tokens=0, slots=0, enc=0, text_in=0, text_out=0)
    for row in PackedRows(docs, cfg.data.seq_len, tok.ids):
        if s["rows"] == args.rows:
            break
        spans = sample_spans(row["segment_ids"], rng, spans_cfg)
        ex = build_example(row, spans, spans_cfg, enc)
        s["rows"] += 1
        s["sampled"] += len(spans)
        s["encoded"] += int(ex["enc_segment_ids"].max())
        s["span_tokens"] += sum(e - b for b, e in spans)
        s["slots"] += int((ex["slot_index"] >= 0).sum())
        s["enc"] += int((ex["enc_segment_ids"] > 0).sum())
        s["text_in"] += int((row["segment_ids"] > 0).sum()) - sum(e - b for b, e in spans)
        s["text_out"] += int(((ex["segment_ids"] > 0) & (ex["slot_index"] < 0)).sum())
    print(
        f"{s['rows']} rows of {cfg.data.seq_len}; spans sampled {s['sampled']}, encoded "
        f"{s['encoded']} (the rest stayed text)"
    )
    print(
        f"decoder tokens per sampled span {s['span_tokens'] / max(s['sampled'], 1):.1f}; slots "
        f"per encoded span {s['slots'] / max(s['encoded'], 1):.1f}"
    )
    print(f"encoder grid use per row {s['enc'] / s['rows']:.1f} of {cfg.spans.enc_length}")
    print(
        f"text tokens in the row / text outside sampled spans: "
        f"{s['text_out'] / s['text_in']:.3f} (below 1: cut at the row's end)"
    )


if __name__ == "__main__":
    main()
