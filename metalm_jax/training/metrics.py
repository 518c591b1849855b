"""What the user sees: console lines, TensorBoard event files (tensorboardX, no TensorFlow) and a
JSONL file of every logged metric, written by process 0 only.

The workdir may be a URL (gs://bucket/run, metalm_jax/paths.py). An object cannot be appended
to, so there metrics.jsonl is rewritten whole at each write (its earlier lines read once at
start: a resumed run appends as locally), and TensorBoard writes its events file in a local
temporary directory that is copied to <workdir>/tb/ under the same name at each write
(tensorboardX's own gs:// writer needs google-cloud-storage and re-uploads the whole file at
each flush too; this way any epath scheme works)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import jax
from etils import epath

from metalm_jax import paths
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
    """<workdir>/metrics.jsonl (one JSON object per logged step, appended) and TensorBoard
    scalars in <workdir>/tb/; the workdir local or a URL (module docstring)."""

    def __init__(self, workdir: str, enabled: bool = True, log=print):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        self._remote = paths.is_remote(workdir)
        self._tb_local = self._tb_remote = None
        if not enabled:
            return
        SummaryWriter = _summary_writer()
        root = epath.Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        self._jsonl_path = root / "metrics.jsonl"
        if self._remote:
            self._lines = self._jsonl_path.read_text() if self._jsonl_path.exists() else ""
            self._tb_local = tempfile.mkdtemp(prefix="metalm_jax_tb_")
            self._tb_remote = root / "tb"
            log(f"== TensorBoard events go to {self._tb_local}, copied to {self._tb_remote}/")
            self._tb = SummaryWriter(logdir=self._tb_local)
        else:
            self._tb = SummaryWriter(logdir=os.path.join(workdir, "tb"))
            self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), step)
        rec = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        self._tb.flush()
        if self._remote:
            self._lines += json.dumps(rec) + "\n"
            self._jsonl_path.write_text(self._lines)
            self._upload_tb()
        else:
            self._jsonl.write(json.dumps(rec) + "\n")
            self._jsonl.flush()

    def _upload_tb(self) -> None:
        for name in os.listdir(self._tb_local):
            paths.copy_file(os.path.join(self._tb_local, name), self._tb_remote / name)

    def close(self) -> None:
        if not self.enabled:
            return
        self._tb.close()
        if self._remote:
            self._upload_tb()
            shutil.rmtree(self._tb_local, ignore_errors=True)
        else:
            self._jsonl.close()


def _summary_writer():
    """tensorboardX's SummaryWriter, imported without PyTorch. tensorboardX's writer imports
    torch when it is installed (the `convert` extra), only to accept torch tensors; that is
    2.4 s of every train command here, and only Python floats are written. A None entry in
    sys.modules makes its guarded `import torch` fail as if torch were absent; the entry is
    removed right after, so torch imports normally later in the same process."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def console(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)
