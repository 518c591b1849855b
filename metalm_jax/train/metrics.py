"""What the user sees: console lines, TensorBoard event files (tensorboardX, no TensorFlow) and a
JSONL file of every logged metric, written by process 0 only."""

from __future__ import annotations

import json
import math
import os
import time

import jax

from metalm_jax.parallel.chips import CHIPS, chip_for


def peak_flops(override: float) -> float:
    """Peak FLOP/s of the whole job: `override` per device, else the chip table
    (parallel/chips.py) by device kind; CPU: the whole host's (simulated devices share it); NaN
    for an unknown chip."""
    devices = jax.devices()
    if override > 0:
        return override * len(devices)
    if devices[0].platform == "cpu":
        return CHIPS["cpu"].peak_flops * jax.process_count()
    chip = chip_for(devices[0].device_kind)
    return chip.peak_flops * len(devices) if chip is not None else float("nan")


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
