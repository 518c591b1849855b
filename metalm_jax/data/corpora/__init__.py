"""Corpora: TFDS builders and the reading of files, for text (text.py: the bundled KJV, a user's
.txt / .jsonl files) and for image-text pairs (image_text.py: the bundled OpenMoji emojis, a
user's folders / JSONL, standard sets such as COCO captions)."""
