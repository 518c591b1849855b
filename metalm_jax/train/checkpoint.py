"""Orbax checkpoints: train state + data-iterator state + config, async, keep-N, auto-resume.

Layout: <workdir>/checkpoints/<step>/{state, data, config}. `state` is the sharded TrainState
(restored straight into the target shardings), `data` the grain iterator state per process (a
snapshot taken at save time, so an async save never sees a later position), `config` the run's
config as JSON, compared on resume so a changed model shape fails with a clear message.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import orbax.checkpoint as ocp


class _FrozenIteratorState:
    """What grain's Orbax handler needs from an iterator: a fixed `get_state()`."""

    def __init__(self, iterator):
        self._state = json.dumps(iterator.get_state()).encode()

    def get_state(self) -> bytes:
        return self._state


# Config keys that must match between a checkpoint and the run resuming from it.
SHAPE_KEYS = ("model", "data.vocab_size", "data.seq_len", "spans.enc_length")


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


class Checkpointer:
    def __init__(self, workdir: str, every: int, keep: int):
        self.directory = os.path.join(workdir, "checkpoints")
        if "://" not in self.directory:  # keep gs://... as it is
            self.directory = os.path.abspath(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True
            ),
        )
        self.every = every

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator, config: dict, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(data_iterator)),
                config=ocp.args.JsonSave(config),
            ),
            force=force,
        )

    def check_config(self, step: int, config: dict) -> None:
        """Raises naming every shape-relevant key whose value differs from the checkpoint's.

        Keys the checkpoint's config does not have (added to the code later) are not compared.
        """
        saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        saved = saved["config"]
        diffs = []
        for key in SHAPE_KEYS:
            try:
                old, new = _get(saved, key), _get(config, key)
            except KeyError:
                continue
            diffs += _diff(old, new, key)
        if diffs:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match this config: "
                + "; ".join(f"{k}: checkpoint {o!r}, config {n!r}" for k, o, n in diffs[:8])
                + " (use another --workdir or the checkpoint's config)"
            )

    def restore(self, step: int, abstract_state, data_iterator, config: dict):
        """Restores state into `abstract_state`'s shardings, and the data iterator in place
        unless it is None (e.g. to read a run's parameters with another process count)."""
        self.check_config(step, config)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
