"""Data: corpora (TFDS builders), tokenizer, packing, semi-causal spans and the grain pipeline.

Everything here up to the Batch is pure numpy (no jax), so it is testable in milliseconds.
"""
