"""Pretraining rows: full-sentence packing (packing.py), documents packed K at a time into rows
(packed_rows.py) and image-text pairs packed into rows (vl_rows.py). The semi-causal spans of a
text row are data/spans.py's; the grain streams that use these are data/feed/pipeline.py and
data/feed/vl_pipeline.py."""
