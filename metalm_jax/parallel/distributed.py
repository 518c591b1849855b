"""Multi-host start-up and the few places where processes must take turns.

`initialize` wraps `jax.distributed.initialize`: with no arguments JAX auto-detects TPU pods,
Slurm and other clusters; on CPU (tests, localhost runs) pass the coordinator, process count and
id. CPU collectives use gloo (the default in this JAX).
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None):
    kwargs = {}
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id")
        kwargs = dict(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    jax.distributed.initialize(**kwargs)


def first_process_then_others(name: str, fn):
    """Runs `fn` on process 0, then (after a barrier) on every other process.

    For work that writes shared files (TFDS preparation, tokenizer training): process 0 does it,
    the others then find it done and only read.
    """
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(f"metalm_jax:{name}")
    return result if jax.process_index() == 0 else fn()
