"""Prepared decoder rows: the record format of the ArrayRecord shards that
`python -m metalm_jax.prepare` writes, and the order training reads them in.

A record is one packed row (packing.py) before span sampling, in 10 bytes of header and two
arrays:

    "MLR1"  uint8 token itemsize  uint8 segment itemsize  uint32 L  tokens[L]  segment_ids[L]

Tokens are uint16 while the vocabulary fits (int32 otherwise), segment ids uint8 while a row
holds fewer than 256 segments. Positions are not stored: they restart at 0 with every segment
and are 0 on padding (segment 0), so `decode_row` recomputes them from the segment ids
(2048 tokens: 4 KiB + 2 KiB + 10 bytes a row).

The training order is a pure function of (seed, step, process, process count): the r-th row of
process p's share (of P) at step s is global batch position

    g = s * global_batch + p * (global_batch / P) + r
    epoch, k = divmod(g, N)                    N = rows of the prepared train split
    row = index_shuffle(k; N, seed(seed, epoch))   a fresh permutation of all rows per epoch

and its spans are drawn with a generator seeded by (seed, epoch, row). So the data position is
the step itself: a run resumed on another number of processes continues the same global
sequence of rows, and the batch of a step is the same whatever P (each process holds its slice).

Worked example, N = 5 rows, global batch 4, P = 2 (2 rows a process), permutation of epoch 0
[3 0 4 1 2] and of epoch 1 [1 4 2 0 3]:

    step 0   g 0 1 | 2 3    rows 3 0 | 4 1      process 0 | process 1
    step 1   g 4 5 | 6 7    rows 2 1 | 4 2      (g 5..7 are epoch 1's k 0..2)
"""

from __future__ import annotations

import struct
import sys

import grain
import numpy as np

from metalm_jax.types import DataError

MAGIC = b"MLR1"
_HEADER = struct.Struct("<4sBBI")  # magic, token itemsize, segment itemsize, row length
_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.int32)}
SHUFFLE_ROUNDS = 4


def _smallest(values: np.ndarray) -> np.dtype:
    top = int(values.max()) if values.size else 0
    if top < 2**8:
        return _DTYPES[1]
    return _DTYPES[2] if top < 2**16 else _DTYPES[4]


def encode_row(row: dict) -> bytes:
    """A packed row {tokens, segment_ids(, positions)} (int[L] each) as one record."""
    tokens = np.asarray(row["tokens"])
    seg = np.asarray(row["segment_ids"])
    tdt = _DTYPES[2] if _smallest(tokens).itemsize <= 2 else _DTYPES[4]
    sdt = _smallest(seg)
    head = _HEADER.pack(MAGIC, tdt.itemsize, sdt.itemsize, len(tokens))
    return head + tokens.astype(tdt).tobytes() + seg.astype(sdt).tobytes()


def positions_of(seg: np.ndarray) -> np.ndarray:
    """int32[L] positions restarting at 0 with each segment, 0 on padding (segment 0)."""
    n = len(seg)
    starts = np.flatnonzero(np.diff(seg, prepend=-1))  # where each run of one segment id starts
    lengths = np.diff(np.append(starts, n))
    pos = np.arange(n, dtype=np.int32) - np.repeat(starts, lengths).astype(np.int32)
    pos[seg == 0] = 0
    return pos


def decode_row(data: bytes, where: str = "record") -> dict[str, np.ndarray]:
    """The row {tokens, segment_ids, positions} (int32[L] each) of a record; a record that is not
    one is a DataError naming `where`."""
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise DataError(f"{where}: not a prepared row (no {MAGIC.decode()} header)")
    _, ti, si, n = _HEADER.unpack_from(data)
    if ti not in _DTYPES or si not in _DTYPES or len(data) != _HEADER.size + n * (ti + si):
        raise DataError(f"{where}: a damaged prepared row ({len(data)} bytes for L={n})")
    tokens = np.frombuffer(data, _DTYPES[ti], n, _HEADER.size).astype(np.int32)
    seg = np.frombuffer(data, _DTYPES[si], n, _HEADER.size + n * ti).astype(np.int32)
    return {"tokens": tokens, "segment_ids": seg, "positions": positions_of(seg)}


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def global_row(seed: int, g: int, n_rows: int) -> tuple[int, int]:
    """(epoch, row) read at global batch position `g` (module docstring)."""
    epoch, k = divmod(int(g), n_rows)
    if n_rows == 1:
        return epoch, 0
    row = grain.experimental.index_shuffle(
        k, max_index=n_rows - 1, seed=_epoch_seed(seed, epoch), rounds=SHUFFLE_ROUNDS
    )
    return epoch, int(row)


def global_position(step: int, r: int, process: int, count: int, global_batch: int) -> int:
    """The global batch position of row `r` of process `process`'s share (of `count`) at
    `step`."""
    return step * global_batch + process * (global_batch // count) + r


class ProcessShare(grain.MapDataset):
    """Random access to one process's rows in training order: element i is row i % b of step
    i // b (b = global_batch / count), as (epoch, row index, record bytes). Unbounded: epochs
    follow each other, each its own permutation of the `source`'s rows."""

    def __init__(self, source, seed: int, global_batch: int, process: int, count: int):
        super().__init__()
        if global_batch % count:
            raise ValueError(f"global batch {global_batch} not divisible by {count} processes")
        self._source = source
        self._rows = len(source)
        if not self._rows:
            raise DataError("the prepared train split holds no rows")
        self._seed = int(seed)
        self._batch = int(global_batch)
        self._process = int(process)
        self._count = int(count)
        self._local = global_batch // count

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        step, r = divmod(int(index), self._local)
        g = global_position(step, r, self._process, self._count, self._batch)
        epoch, row = global_row(self._seed, g, self._rows)
        return epoch, row, self._source[row]

    def __str__(self) -> str:
        return f"ProcessShare(rows={self._rows}, process={self._process}/{self._count})"


class StepIterator:
    """The per-process batches of prepared rows, positioned by the train step: `seek(step)`
    puts it at any step (a resume, on any number of processes), and its checkpointed state is
    the step. `batches[s]` (a MapDataset) is the batch of step s; grain's threads read ahead."""

    positioned_by_step = True  # checkpoint.py: the loop seeks it to the restored step

    def __init__(self, batches: grain.MapDataset, read_options: grain.ReadOptions | None = None):
        self._batches = batches
        self._options = read_options or grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        self._it = None
        self.seek(0)

    def seek(self, step: int) -> None:
        self.step = int(step)
        self._it = iter(self._batches[self.step :].to_iter_dataset(self._options))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._it)
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.seek(int(state["step"]))
