"""What the user sees: console lines, TensorBoard event files (tensorboardX, no TensorFlow) and a
JSONL file of every logged metric, written by process 0 only."""

from __future__ import annotations

import json
import math
import os
import time

import jax

# Dense peak FLOP/s per device (bf16) for MFU; CPU: the whole host (simulated devices share it).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA H100": 989e12,
    "cpu": 1.7e11,  # ~2-core host matmul peak measured for DESIGN.md
}


def peak_flops(override: float) -> float:
    """Peak FLOP/s of the whole job: override per device, else the table by device kind."""
    devices = jax.devices()
    if override > 0:
        return override * len(devices)
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":
        return PEAK_FLOPS["cpu"] * jax.process_count()
    for name, flops in PEAK_FLOPS.items():
        if kind.startswith(name):
            return flops * len(devices)
    return float("nan")


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricWriter:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(logdir=os.path.join(workdir, "tb"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), step)
        rec = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(rec) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def console(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)
