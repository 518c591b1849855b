"""Prepared decoder rows: the record format of the ArrayRecord shards that
`python -m metalm_jax.prepare` writes, and the order training reads them in.

A record is one packed row (packing.py) before span sampling, in 10 bytes of header and two
arrays:

    "MLR1"  uint8 token itemsize  uint8 segment itemsize  uint32 L  tokens[L]  segment_ids[L]

Tokens are uint16 while the vocabulary fits (int32 otherwise), segment ids uint8 while a row
holds fewer than 256 segments. Positions are not stored: they restart at 0 with every segment
and are 0 on padding (segment 0), so `decode_row` recomputes them from the segment ids
(2048 tokens: 4 KiB + 2 KiB + 10 bytes a row).

An image-text record is the pairs of one image-text row (packed by vl_rows.PairPacker when
preparing, before the prefix length is drawn), each image stored as JPEG at the model's
resolution (shorter side; the crop is taken in training):

    "MLP1"  uint8 n  n x (uint32 caption tokens, uint32 image bytes)  captions (int32)  images

The training order is a pure function of (seed, step, process, process count): the r-th row of
process p's share (of P) at step s is global batch position

    g = s * global_batch + p * (global_batch / P) + r
    epoch, k = divmod(g, N)                    N = rows of the prepared train split
    row = index_shuffle(k; N, seed(seed, epoch))   a fresh permutation of all rows per epoch

and its spans are drawn with a generator seeded by (seed, epoch, row). With image-text rows
(a VL config), images.text_ratio as p/q (`mix_pattern`) splits the global positions: of every
q, the first p read the text stream and the rest the image-text stream, each stream its own
sequence of permutations (k above is then the position within the stream, `stream_position`),
and an image-text row's prefix lengths and augmentation are drawn from (seed, epoch, row) too.
So the data position is the step itself: a run resumed on another number of processes
continues the same global sequence of rows, and the batch of a step is the same whatever P
(each process holds its slice).

Worked example, N = 5 rows, global batch 4, P = 2 (2 rows a process), permutation of epoch 0
[3 0 4 1 2] and of epoch 1 [1 4 2 0 3]:

    step 0   g 0 1 | 2 3    rows 3 0 | 4 1      process 0 | process 1
    step 1   g 4 5 | 6 7    rows 2 1 | 4 2      (g 5..7 are epoch 1's k 0..2)
"""

from __future__ import annotations

import fractions
import functools
import os
import struct
import sys
import threading
import time

import grain
import numpy as np

from metalm_jax.types import DataError

MAGIC = b"MLR1"
_HEADER = struct.Struct("<4sBBI")  # magic, token itemsize, segment itemsize, row length
_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.int32)}
SHUFFLE_ROUNDS = 4
# A worker's batch arrays smaller than this travel pickled through its queue, larger ones
# (a VL batch's images) through shared memory: grain's default sends every array through a
# segment of its own, whose setup dominated the training process's cost per batch
# (benchmarks/feed_speed.py, RESULTS.md "Prepared data"; the variable is there to compare)
MIN_SHM_BYTES = int(os.environ.get("METALM_MIN_SHM_BYTES", 1 << 20))


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


PAIRS_MAGIC = b"MLP1"
_PAIRS_HEADER = struct.Struct("<4sB")  # magic, pairs in the row
_PAIR = struct.Struct("<II")  # caption tokens, image bytes


def encode_pairs(pairs) -> bytes:
    """The image-text pairs of one row [(image bytes, caption int[n] ending in </s>), ...] as
    one record: header, then per pair (n, image length), the captions (int32), the images."""
    head = _PAIRS_HEADER.pack(PAIRS_MAGIC, len(pairs))
    sizes = b"".join(_PAIR.pack(len(c), len(im)) for im, c in pairs)
    captions = b"".join(np.asarray(c, np.int32).tobytes() for _, c in pairs)
    return head + sizes + captions + b"".join(bytes(im) for im, _ in pairs)


def decode_pairs(data: bytes, where: str = "record") -> list[tuple[bytes, np.ndarray]]:
    """[(image bytes, caption int32[n]), ...] of a record; one that is not one is a DataError
    naming `where`."""
    if len(data) < _PAIRS_HEADER.size or data[:4] != PAIRS_MAGIC:
        raise DataError(
            f"{where}: not a prepared image-text row (no {PAIRS_MAGIC.decode()} header)"
        )
    n = _PAIRS_HEADER.unpack_from(data)[1]
    at = _PAIRS_HEADER.size
    sizes = [_PAIR.unpack_from(data, at + k * _PAIR.size) for k in range(n)]
    at += n * _PAIR.size
    if len(data) != at + sum(4 * c + i for c, i in sizes):
        raise DataError(f"{where}: a damaged prepared image-text row ({len(data)} bytes)")
    captions = []
    for c, _ in sizes:
        captions.append(np.frombuffer(data, np.int32, c, at).copy())
        at += 4 * c
    images = []
    for _, i in sizes:
        images.append(data[at : at + i])
        at += i
    return list(zip(images, captions, strict=True))


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    key = [seed, epoch] if stream == 0 else [seed, epoch, stream]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def global_row(seed: int, g: int, n_rows: int, stream: int = 0) -> tuple[int, int]:
    """(epoch, row) read at position `g` of a stream of `n_rows` rows (module docstring)."""
    epoch, k = divmod(int(g), n_rows)
    if n_rows == 1:
        return epoch, 0
    row = grain.experimental.index_shuffle(
        k, max_index=n_rows - 1, seed=_epoch_seed(seed, epoch, stream), rounds=SHUFFLE_ROUNDS
    )
    return epoch, int(row)


def mix_pattern(text_ratio: float) -> tuple[int, int]:
    """images.text_ratio as p/q (q <= 64): of every q global positions the first p are text rows
    (stream 0), the others image-text rows (stream 1)."""
    ratio = fractions.Fraction(float(text_ratio)).limit_denominator(64)
    return ratio.numerator, ratio.denominator


def stream_position(g: int, pattern: tuple[int, int]) -> tuple[int, int]:
    """(stream, position in that stream) of global position `g` under `pattern` (mix_pattern)."""
    p, q = pattern
    cycle, t = divmod(int(g), q)
    return (0, cycle * p + t) if t < p else (1, cycle * (q - p) + t - p)


def global_position(step: int, r: int, process: int, count: int, global_batch: int) -> int:
    """The global batch position of row `r` of process `process`'s share (of `count`) at
    `step`."""
    return step * global_batch + process * (global_batch // count) + r


class ProcessShare(grain.MapDataset):
    """Random access to one process's rows in training order: element i is row i % b of step
    i // b (b = global_batch / count), as (stream, epoch, row index, record bytes). Unbounded:
    epochs follow each other, each its own permutation of a stream's rows. `sources`: the text
    rows (stream 0) and, for image-text training, the image-text rows (stream 1), mixed by
    `pattern` (mix_pattern; default: text only)."""

    def __init__(self, sources, seed, global_batch, process, count, pattern=(1, 1)):
        super().__init__()
        if global_batch % count:
            raise ValueError(f"global batch {global_batch} not divisible by {count} processes")
        self._sources = tuple(sources)
        self._rows = tuple(len(src) for src in self._sources)
        p, q = pattern
        used = [p > 0, q > p]
        for stream, name in enumerate(("train", "image-text train")):
            if used[stream] and (stream >= len(self._rows) or not self._rows[stream]):
                raise DataError(f"the prepared {name} split holds no rows")
        self._pattern = (int(p), int(q))
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
        stream, k = stream_position(g, self._pattern)
        epoch, row = global_row(self._seed, k, self._rows[stream], stream)
        return stream, epoch, row, self._sources[stream][row]

    def __str__(self) -> str:
        return f"ProcessShare(rows={self._rows}, process={self._process}/{self._count})"


def auto_workers(cores: int | None = None) -> int:
    """data.workers=-1: worker processes for a host with `cores` cores (default: the ones this
    process may run on): half the cores less one, at most 16 (2 cores: 0, i.e. none, the step
    and the main process need them; 8: 3; a v5p host's 208 vCPUs: 16)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, int(cores or 1) // 2 - 1))


def exit_with_parent(parent: int) -> None:
    """Run in a worker process as it starts (`parent`: the pid of the process that made it): a
    daemon thread ends the worker (exit status 0) as soon as that parent is gone, also when it
    went before the worker got here, so a job killed without its clean-up (SIGKILL, the OOM
    killer) leaves no worker behind. (A parent that exits normally stops its workers.)"""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _grain_worker_init(worker: int, count: int, parent: int) -> None:
    del worker, count
    exit_with_parent(parent)


def _grain_flags_parsed() -> None:
    """grain reads absl flags when it starts worker processes; a program that did not parse
    them (a notebook, a test, a script of a user's) would raise UnparsedFlagAccessError."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class StepIterator:
    """The per-process batches of prepared rows, positioned by the train step: `seek(step)`
    puts it at any step (a resume, on any number of processes or workers), and its checkpointed
    state is the step. `batches[s]` (a MapDataset) is the batch of step s.

    `workers` = 0: grain's threads read ahead in this process. `workers` = N > 0: N worker
    processes (grain's `mp_prefetch`, spawned) each build every N-th batch (record decoding,
    span sampling, row assembly) and grain interleaves them back in step order, so the batches
    are the same whatever N. `close()` stops them (also done when this process exits)."""

    positioned_by_step = True  # checkpoint.py: the loop seeks it to the restored step

    def __init__(
        self,
        batches: grain.MapDataset,
        read_options: grain.ReadOptions | None = None,
        workers: int = 0,
        worker_buffer: int = 2,
    ):
        self._batches = batches
        self._options = read_options or grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        self._workers = int(workers)
        self._worker_buffer = int(worker_buffer)
        self._it = None
        self.seek(0)

    def seek(self, step: int) -> None:
        self.close()
        self.step = int(step)
        ds = self._batches[self.step :].to_iter_dataset(self._options)
        if self._workers > 0:
            _grain_flags_parsed()
            shm = grain.experimental.DatasetOptions(min_shm_size=MIN_SHM_BYTES)
            ds = grain.experimental.WithOptionsIterDataset(ds, shm)
            options = grain.MultiprocessingOptions(
                num_workers=self._workers, per_worker_buffer_size=self._worker_buffer
            )
            ds = ds.mp_prefetch(
                options, worker_init_fn=functools.partial(_grain_worker_init, parent=os.getpid())
            )
        self._it = iter(ds)

    def close(self) -> None:
        """Stops the worker processes (if any) and drops the read-ahead."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

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
