"""Data: everything from files to the Batch rows a run reads, in three concerns and what they share.

  corpora/   TFDS builders and file reading: text corpora, image-text sets
  pretrain/  pretraining rows: sentence packing, documents packed into rows, image-text rows
  tasks/     supervised tasks: examples and templates, the one task registry, the tasks,
             mixtures, task examples as packed rows
  feed/      what a run reads, on top of the three: the grain pipelines (pipeline.py;
             vl_pipeline.py, its image-text side) and the prepared rows (prepare.py, the job;
             prepared.py, the manifest check)

Shared by the three: the tokenizer (tokenizer.py), image decoding (images.py), the encoder grid,
span encodings and semi-causal spans (spans.py) and the one row builder (rows.py), which stay
in data/ itself. Imports run one way: shared modules <- corpora <- pretrain and tasks <- feed;
no folder imports one that imports it back, a parent and its subfolder included
(tests/test_imports.py holds them to it).

The data code computes with numpy only (no jax arrays, no jit), so it is testable in
milliseconds; importing its modules loads jax all the same, through types.py (the Batch
contract is a flax struct; the error types the data code raises are defined beside it).
"""
