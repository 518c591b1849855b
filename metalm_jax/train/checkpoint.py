"""Orbax checkpoints: train state + data-iterator state + config + digests, async, keep-N,
auto-resume from the newest step that verifies.

Layout: <workdir>/checkpoints/<step>/{state, data, config, digest}. `state` is the sharded
TrainState (restored straight into the target shardings), `data` the grain iterator state per
process (a snapshot taken at save time, so an async save never sees a later position), `config`
the run's config as JSON, compared on resume so a changed model shape or optimizer structure
fails with a clear message, `digest` two 32-bit sums per array of `state` (checkpoint_digest.py),
computed on device before the save and compared after every restore.

A step that cannot be read or does not verify is reported in one line (step, file, reason) and
the resume falls back to the newest step that does; steps newer than the one resumed from are
moved to <workdir>/checkpoints_set_aside/ so that neither their step numbers nor keep-N
deletion touch the steps the resumed run writes. At least two steps are kept, so a damaged
newest step always has a predecessor.

Elastic: the state restores onto any mesh and device count (Orbax reads each array into the
target sharding). The data positions are per process; with the same process count they resume
exactly, with another one the iterators start afresh, said in one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from metalm_jax.train.checkpoint_digest import compare, compare_part, digests
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


class Unreadable(CheckpointError):
    """A step that cannot be read or does not verify; str() is the one line that says so."""

    def __init__(self, step: int, file: str, reason: str):
        self.step, self.file, self.reason = step, file, reason
        super().__init__(f"checkpoint step {step}: {file}: {reason}")


def _reason(e: BaseException, step_dir: str) -> tuple[str | None, str]:
    """(a file under step_dir the error names, a short reason) for a read error.

    A read failed, so the closed-loop callbacks of the reads it abandoned are quieted
    (_quiet_abandoned_reads; every read installs that hook before it starts too, since those
    callbacks can arrive before the error reaches this function). The reason is the innermost
    error `e` was raised from: Orbax wraps TensorStore's error, which names the array and what
    is wrong with it ('Error reading "params.x/0.0": Requested byte range [..) is not valid for
    value of size 10'), in one whose text is the store's multi-KB spec."""
    _quiet_abandoned_reads()
    chain = [e]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    msgs = [" ".join(str(x).split()) for x in chain]
    found = (re.search(re.escape(step_dir) + r"/[^\s'\",}]*", msg) for msg in reversed(msgs))
    m = next((f for f in found if f), None)
    i = len(chain) - 1 if msgs[-1] else 0  # an empty innermost message says nothing
    # the step's path is in the line already; TensorStore appends its spec to some errors
    msgs[i] = re.sub(r' in OCDBT database at local file "[^"]*"', "", msgs[i])
    msgs[i] = re.sub(r" \[tensorstore_spec\S*=.*$", "", msgs[i])
    short = msgs[i] if len(msgs[i]) <= 240 else msgs[i][:237] + "..."
    return (m.group(0) if m else None), f"{type(chain[i]).__name__}: {short}"


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


class _NoMetadataWarning(logging.Filter):
    """Drops Orbax's warning that `<step>/state/_CHECKPOINT_METADATA` does not exist: a
    CheckpointManager writes that file one level up (`<step>/_CHECKPOINT_METADATA`), and a
    params-only read of the `state` item works without it (a warning per read otherwise)."""

    def __init__(self, state_dir: str):
        super().__init__()
        self.file = f"{state_dir}/_CHECKPOINT_METADATA"

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Metadata file does not exist: %s"
            and len(record.args or ()) == 1
            and str(record.args[0]) == self.file
        )


@contextlib.contextmanager
def _without_metadata_warning(state_dir: str):
    absl_logger = logging.getLogger("absl")  # Orbax logs through absl.logging
    quiet = _NoMetadataWarning(state_dir)
    absl_logger.addFilter(quiet)
    try:
        yield
    finally:
        absl_logger.removeFilter(quiet)


def read_params(step_dir: str, abstract_params, step: int = -1):
    """The `params` subtree of the train state saved in `step_dir` (a checkpoints/<step>
    directory), restored into `abstract_params`' shardings; nothing else of the state is read
    (Orbax partial restore), so the optimizer it was trained with does not matter.
    `abstract_params` may name only some top-level modules (`init` from a run). The arrays read
    are verified against the step's digests (when it has them).

    Raises Unreadable (naming the file) if the step cannot be read or does not verify, and
    CheckpointError naming the arrays if the saved parameters do not fit `abstract_params`."""
    path = f"{step_dir}/state"
    _quiet_abandoned_reads()
    with _without_metadata_warning(path):
        return _read_params(step_dir, path, abstract_params, step)


def _read_params(step_dir: str, path: str, abstract_params, step: int):
    try:
        meta = ocp.PyTreeCheckpointer().metadata(path)
        meta = getattr(meta, "item_metadata", meta)
        tree = meta if isinstance(meta, dict) else meta.tree
        saved = tree["params"]
    except Exception as e:  # noqa: BLE001 -- any read failure means: fall back
        file, reason = _reason(e, step_dir)
        raise Unreadable(step, file or path, reason) from e
    bad = _param_diffs(saved, abstract_params)
    if bad:
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise CheckpointError(
            f"checkpoint {step_dir}: its parameters do not fit this config's model: "
            + "; ".join(bad[:6])
            + more
            + " (use the run's own config, or its model section)"
        )
    saved_digests = None  # steps saved before digests existed are not verified
    if (epath.Path(step_dir) / "digest").exists():
        try:
            saved_digests = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
                f"{step_dir}/digest"
            )
        except Exception as e:  # noqa: BLE001
            file, reason = _reason(e, step_dir)
            raise Unreadable(step, file or f"{step_dir}/digest", reason) from e
    target = {"params": abstract_params}
    try:
        params = ocp.PyTreeCheckpointer().restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            ),
        )["params"]
    except Exception as e:  # noqa: BLE001
        file, reason = _reason(e, step_dir)
        raise Unreadable(step, file or path, reason) from e
    if saved_digests is not None:
        # the saved digests are keyed by the TrainState's paths (.params[...])
        bad = compare_part(saved_digests, digests(params, prefix=".params"))
        if bad:
            raise Unreadable(step, path, bad)
    return params


# the Orbax coroutine that reads one array of a step (orbax/checkpoint/.../serialization.py)
_ORBAX_READ = "_read_array_index_and_device_put"


_READ_ERROR = "Encountered error while reading array index"


def _is_read_error(e) -> bool:
    """Whether `e` is Orbax's error for one array's failed read."""
    return isinstance(e, Exception) and str(e).startswith(_READ_ERROR)


def _abandoned_read(unraisable) -> bool:
    """Whether an unraisable exception is the leftover of a read that a failed restore
    abandoned: 'Event loop is closed' from a read completed into Orbax's closed loop, or the
    read error of another array of the same step, raised when its coroutine, never awaited
    again, is garbage-collected ('Exception ignored in: <coroutine object
    _read_array_index_and_device_put ...>')."""
    e, obj = unraisable.exc_value, unraisable.object
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return True
    code = getattr(obj, "cr_code", None)
    return getattr(code, "co_name", None) == _ORBAX_READ and _is_read_error(e)


class _AbandonedReadLogs(logging.Filter):
    """Log records about the reads that a failed restore abandoned: any record whose exception
    is Orbax's read error (asyncio's 'Task exception was never retrieved' for a read task or a
    task that awaited it, 'Future exception was never retrieved' for the gather of a step's
    reads, a callback's error), and asyncio's 'Task was destroyed but it is pending!' for a
    task of Orbax's read coroutine or of Orbax's code. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _is_read_error(record.exc_info[1]):
            return False
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 -- a record that cannot format is not ours to judge
            return True
        if text.startswith("Task was destroyed but it is pending!"):
            return not (f"coro=<{_ORBAX_READ}()" in text or "/orbax/checkpoint/" in text)
        return True


def _filter_abandoned_read_logs() -> None:
    """Puts _AbandonedReadLogs on the loggers asyncio and concurrent.futures report through,
    and on the root logger's handlers (absl's, where it is installed), so a record logged
    elsewhere about the same error is dropped too."""
    targets = [logging.getLogger("asyncio"), logging.getLogger("concurrent.futures")]
    for target in targets + list(logging.getLogger().handlers):
        if not any(isinstance(f, _AbandonedReadLogs) for f in target.filters):
            target.addFilter(_AbandonedReadLogs())


def _quiet_abandoned_reads() -> None:
    """Drops what the reads a failed restore abandoned print (see _abandoned_read and
    _AbandonedReadLogs).

    Orbax reads a step's arrays concurrently on an asyncio loop and stops listening when the
    first read fails. The other reads then end on their own: completed into the closed loop,
    failing as their coroutines are collected (both unraisable exceptions), or as tasks and
    futures whose error nobody retrieved or that were still pending (logged by asyncio). Each
    prints a page of tracebacks (TensorStore's multi-KB spec included), at any later moment:
    during the fallback's training, or after the error line that ends the run. They carry
    nothing (the failure is reported in one line), so this hook and filter drop exactly them
    and pass everything else on. Every read installs them before Orbax starts: the abandoned
    reads can end before the first one's error has reached _reason (seen on the CI machine)."""
    _filter_abandoned_read_logs()
    previous = sys.unraisablehook
    if getattr(previous, "quiets_closed_loop", False):
        return

    def hook(unraisable) -> None:
        if _abandoned_read(unraisable):
            return
        previous(unraisable)

    hook.quiets_closed_loop = True
    sys.unraisablehook = hook


class Checkpointer:
    def __init__(self, workdir: str, every: int, keep: int):
        self.directory = os.path.join(workdir, "checkpoints")
        if "://" not in self.directory:  # keep gs://... as it is
            self.directory = os.path.abspath(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max(keep, 2), create=True, enable_async_checkpointing=True
            ),
        )
        self.every = every

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def reached_preemption(self, step: int) -> bool:
        """Whether JAX's preemption service (TPU VMs; multi-host runs) says every process is to
        save `step` and stop; False where the service does not run (one process, CPU). Must be
        asked at every step on every process (train/preemption.py)."""
        return bool(self.manager.reached_preemption(step))

    def save(self, step: int, state, data_iterator, config: dict, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(data_iterator)),
                config=ocp.args.JsonSave(config),
                digest=ocp.args.JsonSave(digests(state)),
            ),
            force=force,
        )

    def _read(self, step: int, item: str, args):
        """One item of a step; Unreadable (naming the file) if it cannot be read."""
        step_dir = f"{self.directory}/{step}"
        _quiet_abandoned_reads()
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]
        except Exception as e:  # noqa: BLE001 -- any read failure means: fall back
            file, reason = _reason(e, step_dir)
            raise Unreadable(step, file or f"{step_dir}/{item}", reason) from e

    def check_config(self, step: int, config: dict) -> None:
        """Raises naming every shape- or optimizer-relevant key whose value differs from the
        checkpoint's; Unreadable if its config cannot be read.

        Keys the checkpoint's config does not have (added to the code later) are not compared.
        """
        saved = self._read(step, "config", ocp.args.JsonRestore())
        if not isinstance(saved, dict):
            raise Unreadable(step, f"{self.directory}/{step}/config", "not a JSON object")
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
        ones, and the iterators start afresh. A step with no data files at all is not this case
        (it is damaged: Unreadable, and the resume falls back)."""
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

    def restore(self, step: int, abstract_state, data_iterator, config: dict, log=print):
        """Restores state into `abstract_state`'s shardings (any mesh: a step saved on 8
        devices restores on 4 or 1) and verifies its digests, and restores the data iterator in
        place unless it is None (e.g. to read a run's parameters). With another process count
        than the one that saved the step, the iterator starts afresh (_data_saved_elsewhere).
        Raises Unreadable if the step cannot be read or does not verify, CheckpointError if it
        does not match the config."""
        self.check_config(step, config)
        step_dir = f"{self.directory}/{step}"
        saved_digests = None  # steps saved before digests existed are not verified
        if (epath.Path(step_dir) / "digest").exists():
            saved_digests = self._read(step, "digest", ocp.args.JsonRestore())
        state = self._read(step, "state", ocp.args.StandardRestore(abstract_state))
        if jax.tree.structure(state) != jax.tree.structure(abstract_state):
            raise CheckpointError(
                f"checkpoint {step_dir}: the saved train state's structure differs from this "
                "config's (an optimizer or model key changed): use the checkpoint's config"
            )
        if saved_digests is not None:
            bad = compare(saved_digests, digests(state))
            if bad:
                raise Unreadable(step, f"{step_dir}/state", bad)
        if data_iterator is not None and not self._data_saved_elsewhere(step, log):
            name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
            try:
                self.manager.restore(
                    step,
                    args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)),
                )
            except Exception as e:  # noqa: BLE001
                raise Unreadable(step, f"{step_dir}/data/{name}", _reason(e, step_dir)[1]) from e
        return state

    def restore_good(self, abstract_state, data_iterator, config: dict, want: int, log):
        """(state, step): step `want` (> 0), or else the newest step that reads and verifies,
        each failure logged in one line. Steps newer than the one restored are set aside."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if want > 0 and want not in steps:
            raise CheckpointError(
                f"train.restore_step={want}: no such checkpoint in {self.directory} "
                f"(have {sorted(steps)}; 0 = the latest)"
            )
        failed = []
        for step in [want] if want > 0 else steps:
            try:
                state = self.restore(step, abstract_state, data_iterator, config, log)
            except Unreadable as e:
                if want > 0:
                    raise CheckpointError(f"train.restore_step={want}: {e}") from e
                failed.append(str(e))
                log(f"== {e}; trying the previous step")
                continue
            self._set_aside([s for s in steps if s > step], log)
            return state, step
        raise CheckpointError(
            f"no checkpoint in {self.directory} reads and verifies ({'; '.join(failed)}): "
            "move checkpoints/ away to start afresh"
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
        log(f"== moved newer steps {sorted(steps)} to {aside}/ (kept, not resumed from)")

    def _step(self, step: int | None) -> int:
        """`step`, or the newest if None; FileNotFoundError if there is no such step."""
        steps = self.manager.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: train first")
        if step is not None and step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (have {sorted(steps)})"
            )
        return max(steps) if step is None else step

    def saved_config(self, step: int | None = None) -> tuple[dict, int]:
        """(the config saved with `step` (the newest if None), as a dict; that step).
        FileNotFoundError if there is no such step, Unreadable if its config cannot be read."""
        step = self._step(step)
        saved = self._read(step, "config", ocp.args.JsonRestore())
        if not isinstance(saved, dict):
            raise Unreadable(step, f"{self.directory}/{step}/config", "not a JSON object")
        return saved, step

    def restore_params(self, abstract_params, step: int | None = None, log=print):
        """(params, step): the parameters of `step` alone (read_params: no optimizer state is
        read, any mesh), or with `step` None those of the newest step that reads and verifies,
        each failure logged in one line (nothing is set aside: reading changes nothing).
        FileNotFoundError if there is no such step; CheckpointError if none verifies or the
        parameters do not fit `abstract_params`."""
        self._step(step)
        steps = sorted(self.manager.all_steps(), reverse=True)
        failed = []
        for s in [step] if step is not None else steps:
            try:
                return read_params(f"{self.directory}/{s}", abstract_params, s), s
            except Unreadable as e:
                if step is not None:
                    raise
                failed.append(str(e))
                log(f"== {e}; trying the previous step")
        raise CheckpointError(
            f"no checkpoint in {self.directory} reads and verifies ({'; '.join(failed)})"
        )

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
