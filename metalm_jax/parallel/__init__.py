"""Parallelism: the device mesh and logical-axis sharding rules."""
