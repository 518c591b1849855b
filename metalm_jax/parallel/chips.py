"""The accelerators this code knows by name: peak FLOP/s for MFU (training/metrics.py), and HBM and
topology shape for compiling to a TPU slice from CPU (metalm_jax/aot.py). One table, so a chip's
figures are written once.

A chip is found by JAX's `device_kind`: the longest listed prefix wins, so "TPU v5 lite" (v5e) is
not taken for "TPU v5" (v5p), and "NVIDIA H100 80GB HBM3" is an H100.
"""

from __future__ import annotations

import dataclasses

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    device_kinds: tuple[str, ...]  # JAX `device_kind` prefixes naming this chip
    peak_flops: float  # dense bf16 FLOP/s per device (one device per chip; CPU: the whole host)
    hbm_bytes: int = 0  # per chip (0: not listed)
    cores_per_chip: int = 1  # topology names count TensorCores: "v5p-128" is 64 chips
    torus_dims: int = 0  # TPU interconnect: 3-D torus or 2-D grid (0: not a TPU slice)


# Keys of TPU entries are the generations as the compiler's topology names spell them ("v5p:4x4x4").
CHIPS: dict[str, Chip] = {
    "v4": Chip(("TPU v4",), 275e12, 32 * GiB, cores_per_chip=2, torus_dims=3),
    "v5p": Chip(("TPU v5p", "TPU v5"), 459e12, 95 * GiB, cores_per_chip=2, torus_dims=3),
    "v5e": Chip(("TPU v5e", "TPU v5 lite"), 197e12, 16 * GiB, torus_dims=2),
    "v6e": Chip(("TPU v6e", "TPU v6 lite"), 918e12, 32 * GiB, torus_dims=2),
    "h100": Chip(("NVIDIA H100",), 989e12, 80 * GiB),
    "cpu": Chip(("cpu",), 1.7e11),  # ~2-core host matmul peak measured for DESIGN.md
}

TPU_GENERATIONS = tuple(name for name, chip in CHIPS.items() if chip.torus_dims)


def chip_for(device_kind: str) -> Chip | None:
    """The chip whose longest `device_kinds` prefix starts `device_kind`, or None."""
    best, length = None, -1
    for chip in CHIPS.values():
        for kind in chip.device_kinds:
            if device_kind.startswith(kind) and len(kind) > length:
                best, length = chip, len(kind)
    return best
