"""Corpora: TFDS builders and the reading of files, for text (text.py: the bundled KJV, a user's
corpus files) and for image-text pairs (image_text.py: the bundled OpenMoji emojis, a user's
pairs, standard sets such as COCO captions).

Under the builders, one reader layer without TFDS: sources.py (paths, globs and URLs; streams
decompressed as they are read; Parquet by row groups; the `data.on_bad_record` policy),
documents.py (text documents from .txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet) and pairs.py
(image-caption pairs from folders, JSONL, webdataset .tar shards and Parquet with image bytes)."""
