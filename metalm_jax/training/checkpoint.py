"""Orbax checkpoints: train state + data-iterator state + config + digests, async, keep-N,
manifests, auto-resume from the newest intact step.

Layout: <workdir>/checkpoints/<step>/{state, data, config, digest, manifest.process_*.json}.
`state` is the sharded TrainState (restored straight into the target shardings), `data` the
grain iterator state per process (a snapshot taken at save time, so an async save never sees a
later position), `config` the run's config as JSON, compared on resume so a changed model shape
or optimizer structure fails with a clear message, `digest` two 32-bit sums per array of
`state` (checkpoint_digest.py), computed on device before the save and compared after every
restore, and the manifest (training/manifest.py): size and SHA-256 of every file, written by each
process for its share of the files once Orbax has committed the step.

One door: every reader (resume, params-only reads for evaluate/generate/finetune.from_run,
`init` from an Orbax run) chooses its step through `readable_steps` / `verdict`, which decide
damage from the files and their manifest before Orbax reads anything. A damaged step (a file
missing, truncated or changed, or no manifest for a step saved after manifests began) is
reported in one line and skipped; the resume sets it aside in <workdir>/checkpoints_set_aside/
so that neither its step number nor keep-N deletion touches the steps the resumed run writes.
At least two steps are kept, so a damaged newest step has a predecessor. Damaged files are never
handed to Orbax, so nothing of Orbax's half-finished reads is ever printed.

Reading a step that passed is not expected to fail: a transient I/O error (OSError or
TimeoutError from the store) is tried again after RETRY_DELAYS, said in one line each time; any
other failure (or the last) is a real error (ReadError): one line naming the step and the
error, nothing set aside, no fallback to an older step. Steps saved before manifests existed
are read unverified, said in one line.

Elastic: the state restores onto any mesh and device count (Orbax reads each array into the
target sharding). The data positions are per process; with the same process count they resume
exactly, with another one the iterators start afresh, said in one line.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Iterator

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from metalm_jax.training import manifest
from metalm_jax.training.checkpoint_digest import compare, compare_part, digests
from metalm_jax.types import CheckpointError


class _FrozenIteratorState:
    """What grain's Orbax handler needs from an iterator: a fixed `get_state()`."""

    def __init__(self, iterator):
        self._state = json.dumps(iterator.get_state()).encode()

    def get_state(self) -> bytes:
        return self._state


# Config keys that must match between a checkpoint and the run resuming from it: the shapes,
# and what decides the optimizer state's structure (which groups exist and what they hold).
SHAPE_KEYS = ("model", "data.vocab_size", "data.seq_len", "spans.enc_length")
OPTIMIZER_KEYS = ("optim.name", "optim.frozen", "optim.lr_multipliers", "optim.clip_norm")
# Of those, the keys that decide the parameters' shapes (the others shape batches): what
# loading parameters for inference checks, so a run evaluates on rows of another length.
PARAM_KEYS = ("model", "data.vocab_size")


def _structure(key: str, value):
    """The part of an optimizer key's value that decides the state's structure."""
    if key == "optim.lr_multipliers":
        return [list(pair)[0] for pair in value]  # the patterns; factors may change
    if key == "optim.clip_norm":
        return value > 0
    return value


def _diff(old, new, key: str) -> list:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in old if k in new for d in _diff(old[k], new[k], f"{key}.{k}")]
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [(key, old, new)]


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


# Seconds to wait before each new try of a read that failed with a transient I/O error
# (OSError or TimeoutError from the store); then the error stops the run.
RETRY_DELAYS = (2.0, 8.0, 30.0)


def _chain(e: BaseException) -> list[BaseException]:
    """`e` and what it was raised from (or during), outermost first, at most 8 deep."""
    out = [e]
    while len(out) < 8:
        nxt = out[-1].__cause__ or out[-1].__context__
        if nxt is None or nxt in out:
            break
        out.append(nxt)
    return out


def _transient(e: BaseException) -> bool:
    """Whether a read error is the store's I/O failing (worth another try): an OSError or
    TimeoutError anywhere in its chain (Orbax and TensorStore wrap what the filesystem says)."""
    return any(isinstance(x, OSError | TimeoutError) for x in _chain(e))


def short_error(e: BaseException) -> str:
    """'Type: message' of the innermost error with a message, on one line and at most 240
    characters: Orbax wraps TensorStore's error, which says what failed, in one whose text is
    the store's multi-KB spec."""
    chain = [x for x in _chain(e) if str(x).strip()] or [e]
    x = chain[-1]
    msg = " ".join(str(x).split())
    msg = re.sub(r' in OCDBT database at local file "[^"]*"', "", msg)
    msg = re.sub(r" \[tensorstore_spec\S*=.*$", "", msg)
    msg = msg if len(msg) <= 240 else msg[:237] + "..."
    return f"{type(x).__name__}: {msg}" if msg else type(x).__name__


class ReadError(CheckpointError):
    """A step whose files are not damaged (they match their manifest, or it predates
    manifests) could not be read: a real error (I/O that kept failing, memory, a sharding or
    structure problem), so nothing is set aside and the run does not fall back."""

    def __init__(self, step: int, what: str, error: BaseException, verified: bool):
        why = (
            "its files match their manifest, so this is not damage"
            if verified
            else "it was saved before manifests existed"
        )
        super().__init__(
            f"checkpoint step {step}: reading {what} failed: {short_error(error)} ({why}; "
            "nothing was set aside: fix the cause and run again, --verbose for the traceback)"
        )


def read_with_retries(step: int, what: str, read, log=print, verified: bool = True):
    """read(), tried again after RETRY_DELAYS when it fails with a transient I/O error (each
    retry said in one line); any other error, or the last one, raises ReadError."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            return read()
        except Exception as e:  # noqa: BLE001 -- every failure is reported as ReadError
            if delay is None or not _transient(e):
                raise ReadError(step, what, e, verified) from e
            log(
                f"== checkpoint step {step}: reading {what}: {short_error(e)}; trying again in "
                f"{delay:g} s ({attempt + 1}/{len(RETRY_DELAYS)})"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def step_numbers(directory) -> list[int]:
    """The committed steps under a checkpoints directory, newest first (Orbax's step
    directories are named by the step; its unfinished saves carry a suffix)."""
    d = epath.Path(directory)
    if not d.is_dir():
        return []
    return sorted((int(p.name) for p in d.iterdir() if p.name.isdigit()), reverse=True)


def verdict(directory, step: int) -> manifest.Verdict:
    """The verdict on one step's files, the work shared among the processes (each hashes its
    share of the files; a damage any process finds is the verdict of all)."""
    step_dir = epath.Path(directory) / str(step)
    since = manifest.read_since(directory)
    mine = manifest.check(step_dir, step, since, (jax.process_index(), jax.process_count()))
    if jax.process_count() == 1:
        return mine
    from jax.experimental import multihost_utils

    codes = {"intact": 0, "unverified": 1, "unfinished": 2, "damaged": 3}
    got = multihost_utils.process_allgather(np.array([codes[mine.status]], np.int32))
    got = np.asarray(got).reshape(-1)
    if codes[mine.status] == got.max():
        return mine
    who = int(np.argmax(got == got.max()))
    status = {v: k for k, v in codes.items()}[int(got.max())]
    return manifest.Verdict(step, status, os.fspath(step_dir), f"as process {who} found")


def readable_steps(directory, log=print, skipped=None) -> Iterator[manifest.Verdict]:
    """THE door to a directory of checkpoints: the steps whose files match their manifest (or
    that predate manifests), newest first. Each damaged step met on the way is said in one
    line (and its verdict appended to `skipped`, a list, if given), and an unverified one
    before it is yielded; nothing here reads a step through Orbax. Resume, params-only reads
    and `init` from a run all choose from this."""
    for step in step_numbers(directory):
        v = verdict(directory, step)
        if v.status in ("damaged", "unfinished"):
            log(f"== {v.line}; trying the previous step")
            if skipped is not None:
                skipped.append(v)
            continue
        if v.status == "unverified":
            log(
                f"== checkpoint step {step} was saved before checkpoints had manifests: "
                "its files are read unverified"
            )
        yield v


def check_shapes(saved: dict, config: dict, where: str, keys=SHAPE_KEYS) -> None:
    """Raises CheckpointError naming every value under `keys` in `config` that differs from the
    checkpoint's saved config `saved` (both dicts; keys one of them lacks are not compared)."""
    diffs = []
    for key in keys:
        try:
            diffs += _diff(_get(saved, key), _get(config, key), key)
        except KeyError:
            continue
    if diffs:
        raise CheckpointError(
            f"checkpoint {where} does not match this config: "
            + "; ".join(f"{k}: checkpoint {o!r}, config {n!r}" for k, o, n in diffs[:8])
            + " (use another --workdir or the checkpoint's config)"
        )


def _param_diffs(saved_meta: dict, abstract_params) -> list[str]:
    """What keeps the saved parameters (array metadata) of the top-level modules that
    `abstract_params` names from restoring into it: missing, extra or reshaped arrays."""
    keystr = jax.tree_util.keystr
    flat = jax.tree_util.tree_flatten_with_path
    want = {keystr(p): tuple(x.shape) for p, x in flat(abstract_params)[0]}
    mine = {k: saved_meta[k] for k in abstract_params if k in saved_meta}
    have = {keystr(p): tuple(m.shape) for p, m in flat(mine)[0]}
    out = [f"params{k}: not in the checkpoint" for k in want if k not in have]
    out += [f"params{k}: in the checkpoint, not in this model" for k in have if k not in want]
    out += [
        f"params{k}: checkpoint {have[k]}, this model {want[k]}"
        for k in want
        if k in have and have[k] != want[k]
    ]
    return out


class StepReader:
    """Parts of one step of a checkpoints directory, chosen by the caller through
    readable_steps or verdict: the parameters' metadata, the saved config, and parameters
    alone (an Orbax partial restore of `params`: nothing else of the state is read, so the
    optimizer a run was trained with does not matter). Reads go through a CheckpointManager
    that knows every item's handler, so Orbax finds the step's metadata where it wrote it and
    says nothing; every read is retried on transient I/O errors (read_with_retries)."""

    def __init__(self, step_dir: str, log=print, verified: bool = True):
        path = epath.Path(step_dir)
        if not path.name.isdigit():
            raise CheckpointError(
                f"{step_dir}: expected a run's checkpoints/<step> directory (named by its step)"
            )
        self.step_dir, self.step = os.fspath(path), int(path.name)
        self._read = functools.partial(read_with_retries, self.step, log=log, verified=verified)
        self._metadata = self._config = None  # read once per reader (a step does not change)
        json_handler = ocp.JsonCheckpointHandler()
        self.manager = ocp.CheckpointManager(
            os.fspath(path.parent),
            item_handlers={
                "state": ocp.PyTreeCheckpointHandler(),
                "config": json_handler,
                "digest": ocp.JsonCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(create=False),
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.manager.close()

    def _item(self, item: str, args):
        restore = lambda: self.manager.restore(self.step, args=ocp.args.Composite(**{item: args}))
        return self._read(f"its {item}", restore)[item]

    def param_metadata(self) -> dict:
        """{top-level module: array metadata tree} of the saved parameters (no array read)."""
        if self._metadata is None:
            meta = self._read(
                "the parameter metadata", lambda: self.manager.item_metadata(self.step)
            )
            state = meta["state"]
            self._metadata = getattr(state, "tree", state)["params"]
        return self._metadata

    def config(self) -> dict:
        if self._config is None:
            saved = self._item("config", ocp.args.JsonRestore())
            if not isinstance(saved, dict):
                raise CheckpointError(f"checkpoint {self.step_dir}/config: not a JSON object")
            self._config = saved
        return self._config

    def params(self, abstract_params):
        """The `params` subtree restored into `abstract_params`' shardings (which may name only
        some top-level modules), compared with the step's digests (when it has them).
        CheckpointError naming the arrays if the saved parameters do not fit."""
        bad = _param_diffs(self.param_metadata(), abstract_params)
        if bad:
            more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
            raise CheckpointError(
                f"checkpoint {self.step_dir}: its parameters do not fit this config's model: "
                + "; ".join(bad[:6])
                + more
                + " (use the run's own config, or its model section)"
            )
        saved_digests = None  # steps saved before digests existed are not compared
        if (epath.Path(self.step_dir) / "digest").exists():
            saved_digests = self._item("digest", ocp.args.JsonRestore())
        target = {"params": abstract_params}
        args = ocp.args.PyTreeRestore(
            item=target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        )
        params = self._item("state", args)["params"]
        if saved_digests is not None:
            # the saved digests are keyed by the TrainState's paths (.params[...])
            bad = compare_part(saved_digests, digests(params, prefix=".params"))
            if bad:
                raise _DigestError(self.step, self.step_dir, bad)
        return params


def read_params(step_dir: str, abstract_params, log=print, verified: bool = True):
    """StepReader(step_dir).params(abstract_params)."""
    with StepReader(step_dir, log, verified) as reader:
        return reader.params(abstract_params)


class _DigestError(CheckpointError):
    def __init__(self, step: int, step_dir: str, bad: str):
        super().__init__(
            f"checkpoint step {step} ({step_dir}): the arrays read do not match the digests "
            f"saved with them ({bad}): a save or restore bug, not damage (nothing was set "
            "aside; --verbose for the traceback)"
        )


class Checkpointer:
    """A run's checkpoints/ directory. `create=False` for commands that only read (evaluate,
    generate): nothing is created or written in the workdir."""

    def __init__(self, workdir: str, every: int, keep: int, create: bool = True):
        self.directory = os.path.join(workdir, "checkpoints")
        if "://" not in self.directory:  # keep gs://... as it is
            self.directory = os.path.abspath(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max(keep, 2), create=create, enable_async_checkpointing=True
            ),
        )
        self.every = every
        self._unlisted: list[int] = []  # saved steps whose manifest part is not written yet
        self._chosen: manifest.Verdict | bool | None = None  # what _choose found (False: none)
        if create and jax.process_index() == 0:
            manifest.mark_since(self.directory, self._first_new_step())

    def _first_new_step(self) -> int:
        """The step from which on this directory's steps have manifests (manifest.MARKER): the
        oldest step that has one, else any step this run saves."""
        steps = step_numbers(self.directory)
        with_parts = [s for s in steps if manifest.has_parts(f"{self.directory}/{s}")]
        if with_parts:
            return min(with_parts)
        return steps[0] + 1 if steps else 0

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def reached_preemption(self, step: int) -> bool:
        """Whether JAX's preemption service (TPU VMs; multi-host runs) says every process is to
        save `step` and stop; False where the service does not run (one process, CPU). Must be
        asked at every step on every process (training/preemption.py)."""
        return bool(self.manager.reached_preemption(step))

    def save(self, step: int, state, data_iterator, config: dict, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        saved = self.manager.save(  # waits for the previous save to commit first
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(data_iterator)),
                config=ocp.args.JsonSave(config),
                digest=ocp.args.JsonSave(digests(state)),
            ),
            force=force,
        )
        if saved:
            self._unlisted.append(step)
        self.list_committed()
        return saved

    def list_committed(self, wait: bool = False) -> None:
        """Writes this process's manifest part of every step whose save has committed (`wait`:
        after waiting for the save in flight). Called at every step of the loop, at every save
        and at close, so a step goes without its manifest only between its commit and the next
        step: a run killed there leaves a step that is not trusted (manifest.py)."""
        if not self._unlisted:
            return
        if wait:
            self.manager.wait_until_finished()
        in_flight = not wait and self.manager.is_saving_in_progress()
        done = self._unlisted[:-1] if in_flight else self._unlisted
        for step in done:
            step_dir = epath.Path(self.directory) / str(step)
            if step_dir.exists():  # keep-N may have deleted an old one already
                manifest.write(step_dir, jax.process_index(), jax.process_count())
        self._unlisted = self._unlisted[len(done) :]

    def _read(self, step: int, item: str, args, log, verified: bool):
        """One item of a step (retried on transient I/O errors, else ReadError)."""
        restore = lambda: self.manager.restore(step, args=ocp.args.Composite(**{item: args}))
        return read_with_retries(step, f"its {item}", restore, log, verified)[item]

    def check_config(self, step: int, config: dict, log=print, verified=True) -> None:
        """Raises naming every shape- or optimizer-relevant key whose value differs from the
        checkpoint's.

        Keys the checkpoint's config does not have (added to the code later) are not compared.
        """
        saved = self._read(step, "config", ocp.args.JsonRestore(), log, verified)
        if not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint {self.directory}/{step}/config: not a JSON object")
        diffs = []
        for key in SHAPE_KEYS + OPTIMIZER_KEYS:
            try:
                old, new = _get(saved, key), _get(config, key)
            except KeyError:
                continue
            if key in OPTIMIZER_KEYS:
                old, new = _structure(key, old), _structure(key, new)
            diffs += _diff(old, new, key)
        if diffs:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not match this config: "
                + "; ".join(f"{k}: checkpoint {o!r}, config {n!r}" for k, o, n in diffs[:8])
                + " (use another --workdir or the checkpoint's config)"
            )

    def _data_saved_elsewhere(self, step: int, log) -> bool:
        """True (after saying so in one line) if the step's data positions were saved by another
        number of processes than this run has: each process's documents are `index::count` of
        the split, shuffled per shard, so no position of the old shards is a position of the new
        ones, and the iterators start afresh."""
        data_dir = epath.Path(self.directory) / str(step) / "data"
        ours = data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if ours.exists() or not data_dir.exists():
            return False
        counts = {
            int(m.group(1))
            for p in data_dir.iterdir()
            if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", p.name))
        }
        if not counts or jax.process_count() in counts:
            return False
        log(
            f"== data: checkpoint step {step} holds the data positions of "
            f"{'/'.join(map(str, sorted(counts)))} process(es), this run has "
            f"{jax.process_count()}: the training data is re-sharded and every process's "
            "iterator starts from the beginning of its new shard (documents trained on before "
            "are seen again; parameters and optimizer state are restored exactly)"
        )
        return True

    def restore(self, step: int, abstract_state, data_iterator, config: dict, log=print,
                verified: bool = True):  # fmt: skip
        """Restores state into `abstract_state`'s shardings (any mesh: a step saved on 8
        devices restores on 4 or 1) and compares its digests, and restores the data iterator in
        place unless it is None. With another process count than the one that saved the step,
        the iterator starts afresh (_data_saved_elsewhere). The step must have been chosen
        through readable_steps/verdict: every failure here is a real error (ReadError, or
        CheckpointError if it does not match the config)."""
        self.check_config(step, config, log, verified)
        step_dir = f"{self.directory}/{step}"
        saved_digests = None  # steps saved before digests existed are not compared
        if (epath.Path(step_dir) / "digest").exists():
            saved_digests = self._read(step, "digest", ocp.args.JsonRestore(), log, verified)
        args = ocp.args.StandardRestore(abstract_state)
        state = self._read(step, "state", args, log, verified)
        if jax.tree.structure(state) != jax.tree.structure(abstract_state):
            raise CheckpointError(
                f"checkpoint {step_dir}: the saved train state's structure differs from this "
                "config's (an optimizer or model key changed): use the checkpoint's config"
            )
        if saved_digests is not None:
            bad = compare(saved_digests, digests(state))
            if bad:
                raise _DigestError(step, step_dir, bad)
        # Prepared data (data.prepared_dir) is positioned by the step alone (training/start.py),
        # on any number of processes: its saved position is not read.
        by_step = getattr(data_iterator, "positioned_by_step", False)
        if data_iterator is not None and not by_step and not self._data_saved_elsewhere(step, log):
            args = grain.checkpoint.CheckpointRestore(data_iterator)
            self._read(step, "data", args, log, verified)
        return state

    def restore_good(self, abstract_state, data_iterator, config: dict, want: int, log):
        """(state, step): step `want` (> 0), or else the newest step that readable_steps
        offers (each damaged step said in one line); (None, None) when there is no step, or
        only unfinished ones (a run killed before its first manifest: they are set aside and
        the run starts afresh). After a restore the steps newer than it (the damaged ones)
        are set aside. A failure while reading the chosen step is an error, not a reason to
        fall back, and moves nothing."""
        steps = step_numbers(self.directory)
        if want > 0:
            if want not in steps:
                raise CheckpointError(
                    f"train.restore_step={want}: no such checkpoint in {self.directory} "
                    f"(have {sorted(steps)}; 0 = the latest)"
                )
            chosen = verdict(self.directory, want)
            if chosen.status in ("damaged", "unfinished"):
                raise CheckpointError(f"train.restore_step={want}: {chosen.line}")
        elif not steps:
            return None, None
        else:
            chosen = self._choose(log)
        if chosen is None:
            self._set_aside(steps, log)
            return None, None
        state = self.restore(
            chosen.step, abstract_state, data_iterator, config, log, chosen.status == "intact"
        )
        self._set_aside([s for s in steps if s > chosen.step], log)
        return state, chosen.step

    def _choose(self, log) -> manifest.Verdict | None:
        """The newest readable step (remembered: a second call says nothing again); None if
        every step is unfinished; CheckpointError if none is readable and some are damaged."""
        if self._chosen is None:
            self._chosen = self._choose_now(log)
        return self._chosen or None

    def _choose_now(self, log) -> manifest.Verdict | bool:
        bad: list[manifest.Verdict] = []  # every step, when none is readable: hashed once
        for v in readable_steps(self.directory, log, bad):
            return v
        if all(v.status == "unfinished" for v in bad):
            return False
        lines = "; ".join(v.line for v in bad)
        raise CheckpointError(
            f"no checkpoint in {self.directory} is intact ({lines[:1500]}): move checkpoints/ "
            "away to start afresh"
        )

    def _set_aside(self, steps: list, log) -> None:
        """Moves `steps` out of checkpoints/ (nothing is deleted): the resumed run saves its own
        steps with these numbers, and keep-N would delete its steps before these."""
        if not steps:
            return
        aside = epath.Path(self.directory).parent / "checkpoints_set_aside"
        if jax.process_index() == 0:
            aside.mkdir(parents=True, exist_ok=True)
            for s in steps:
                dst, n = aside / str(s), 1
                while dst.exists():
                    dst, n = aside / f"{s}.{n}", n + 1
                (epath.Path(self.directory) / str(s)).rename(dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoints set aside")
        self.manager.reload()
        self._chosen = None
        log(f"== moved newer steps {sorted(steps)} to {aside}/ (kept, not resumed from)")

    def _pick(self, step: int | None, log) -> manifest.Verdict:
        """The verdict on `step`, or the newest readable step if None: FileNotFoundError if
        there is no such step, CheckpointError if it (or every step) is damaged."""
        steps = step_numbers(self.directory)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: train first")
        if step is None:
            chosen = self._choose(log)
            if chosen is None:
                raise CheckpointError(
                    f"no checkpoint in {self.directory} is finished (each said above)"
                )
            return chosen
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (have {sorted(steps)})"
            )
        v = verdict(self.directory, step)
        if v.status in ("damaged", "unfinished"):
            raise CheckpointError(v.line)
        return v

    def saved_config(self, step: int | None = None, log=print) -> tuple[dict, int]:
        """(the config saved with `step` (the newest readable if None), as a dict; that step).
        FileNotFoundError if there is no such step, CheckpointError if it is damaged."""
        v = self._pick(step, log)
        saved = self._read(v.step, "config", ocp.args.JsonRestore(), log, v.status == "intact")
        if not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint {self.directory}/{v.step}/config: not a JSON object")
        return saved, v.step

    def restore_params(self, abstract_params, step: int | None = None, log=print):
        """(params, step): the parameters of `step` alone (read_params: no optimizer state is
        read, any mesh), or with `step` None those of the newest readable step (damaged ones
        said in one line each; nothing is set aside: reading changes nothing).
        FileNotFoundError if there is no such step; CheckpointError if it is damaged or the
        parameters do not fit `abstract_params`."""
        v = self._pick(step, log)
        step_dir = f"{self.directory}/{v.step}"
        return read_params(step_dir, abstract_params, log, v.status == "intact"), v.step

    def close(self) -> None:
        self.list_committed(wait=True)
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
