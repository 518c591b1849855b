"""Parallelism: the device mesh, logical-axis sharding rules, multi-process start-up, and the
accelerators known by name (chips.py)."""
