"""Checkpoint manifests and the one door (training/manifest.py, training/checkpoint.py), at file
level: a small state saved by the real Checkpointer (Orbax), damaged on disk, judged before
any Orbax read; injected read errors on intact steps are retried or stop, never fall back."""

import errno
import json
import logging
import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metalm_jax.training import checkpoint, manifest
from metalm_jax.training.checkpoint import Checkpointer, ReadError
from metalm_jax.types import CheckpointError


class _Iterator:
    def get_state(self):
        return {"position": 7}


@flax.struct.dataclass
class _State:  # a TrainState's shape: .params (the digests' paths), optimizer state, step
    params: dict
    opt_state: dict
    step: jax.Array


def _state(step: int) -> _State:
    return _State(
        params={"w": jnp.arange(4096, dtype=jnp.float32) * step, "b": jnp.ones((8,)) * step},
        opt_state={"mu": jnp.full((4096,), float(step))},
        step=jnp.asarray(step),
    )


def _abstract() -> _State:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), _state(1)
    )


CONFIG = {"model": {"d": 1}, "data": {"vocab_size": 10}}


def _save(workdir, steps=(3, 6)) -> str:
    ckpt = Checkpointer(str(workdir), every=1, keep=3)
    for s in steps:
        assert ckpt.save(s, _state(s), _Iterator(), CONFIG)
    ckpt.close()
    return ckpt.directory


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    """A workdir with steps 3 and 6 (each with its manifest), copied by each test."""
    workdir = tmp_path_factory.mktemp("manifest") / "run"
    _save(workdir)
    return str(workdir)


@pytest.fixture
def run(saved, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(saved, workdir)
    return workdir


@pytest.fixture
def no_orbax_reads(monkeypatch):
    """Fails the test if Orbax is asked to read anything (verification reads files only)."""

    def refuse(*a, **k):
        raise AssertionError("Orbax was asked to read a step during verification")

    for cls in (ocp.CheckpointManager, ocp.Checkpointer, ocp.PyTreeCheckpointer):
        for name in ("restore", "item_metadata", "metadata"):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, refuse)


def _largest_data_file(step_dir) -> str:
    d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    return max((os.path.join(d, n) for n in os.listdir(d)), key=os.path.getsize)


def _flip(path, at=None):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2 if at is None else at
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    open(path, "wb").write(bytes(data))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


DAMAGE = {  # name -> (damage the step directory, the file the line must name)
    "flipped_bytes": (lambda d: _flip(_largest_data_file(d)), "state/ocdbt.process_0/d/"),
    "data_file_truncated": (lambda d: _truncate(_largest_data_file(d)), "state/ocdbt.process_0/d/"),
    "config_truncated": (lambda d: _truncate(os.path.join(d, "config", "metadata")), "config/"),
    "state_dir_deleted": (lambda d: shutil.rmtree(os.path.join(d, "state")), "state/"),
    "ocdbt_manifest_deleted": (
        lambda d: os.remove(os.path.join(d, "state", "manifest.ocdbt")),
        "state/manifest.ocdbt",
    ),
    "metadata_emptied": (
        lambda d: open(os.path.join(d, "state", "_METADATA"), "w").close(),
        "state/_METADATA",
    ),
    "iterator_file_deleted": (
        lambda d: os.remove(os.path.join(d, "data", "process_0-of-1.json")),
        "data/process_0-of-1.json",
    ),
    "our_manifest_deleted": (
        lambda d: os.remove(os.path.join(d, manifest.part_name(0, 1))),
        "",  # the step directory itself: no manifest
    ),
    "our_manifest_garbled": (
        lambda d: open(os.path.join(d, manifest.part_name(0, 1)), "w").write("{not json"),
        manifest.part_name(0, 1),
    ),
}


def test_a_saved_step_lists_every_file_and_is_intact(saved):
    directory = os.path.join(saved, "checkpoints")
    assert json.load(open(os.path.join(directory, manifest.MARKER))) == {"since": 0}
    for step in (3, 6):
        step_dir = os.path.join(directory, str(step))
        record = json.load(open(os.path.join(step_dir, manifest.part_name(0, 1))))
        on_disk = manifest.step_files(step_dir)
        assert sorted(record["files"]) == on_disk and record["total"] == len(on_disk)
        assert {"config/metadata", "data/process_0-of-1.json"} <= set(on_disk)
        assert any(f.startswith("state/ocdbt.process_0/d/") for f in on_disk)
        for rel, (size, _) in record["files"].items():
            assert os.path.getsize(os.path.join(step_dir, rel)) == size
        assert checkpoint.verdict(directory, step).status == "intact"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_found_before_orbax_reads_and_the_previous_step_is_offered(
    run, damage, no_orbax_reads
):
    directory = os.path.join(run, "checkpoints")
    step_dir = os.path.join(directory, "6")
    hurt, names = DAMAGE[damage]
    hurt(step_dir)
    lines = []
    offered = list(checkpoint.readable_steps(directory, lines.append))
    assert [v.step for v in offered] == [3] and offered[0].status == "intact"
    assert len(lines) == 1 and len(lines[0]) < 400, lines
    named = f"{step_dir}/{names}" if names else f"{step_dir}: no manifest"
    assert lines[0].startswith(f"== checkpoint step 6: {named}"), lines[0]
    assert lines[0].endswith("; trying the previous step"), lines[0]


def test_the_resume_restores_the_previous_step_and_sets_the_damaged_one_aside(run):
    directory = os.path.join(run, "checkpoints")
    _flip(_largest_data_file(os.path.join(directory, "6")))
    ckpt = Checkpointer(run, every=1, keep=3)
    lines = []
    state, step = ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append)
    ckpt.close()
    assert step == 3 and float(state.params["w"][1]) == 3.0
    assert lines[0].startswith("== checkpoint step 6: ") and "checksum differs" in lines[0]
    assert lines[-1].startswith("== moved newer steps [6] to ")
    assert os.listdir(os.path.join(run, "checkpoints_set_aside")) == ["6"]
    assert checkpoint.step_numbers(directory) == [3]


def test_every_step_damaged_is_an_error_naming_each(run):
    directory = os.path.join(run, "checkpoints")
    for s in (3, 6):
        _truncate(_largest_data_file(os.path.join(directory, str(s))))
    ckpt = Checkpointer(run, every=1, keep=3)
    with pytest.raises(CheckpointError, match=r"is intact \(checkpoint step 6: .*step 3: "):
        ckpt.restore_good(_abstract(), None, CONFIG, 0, lambda _: None)
    ckpt.close()
    assert not os.path.exists(os.path.join(run, "checkpoints_set_aside"))


def test_a_step_killed_before_its_manifest_is_unfinished_and_alone_means_start_afresh(run):
    directory = os.path.join(run, "checkpoints")
    shutil.rmtree(os.path.join(directory, "3"))
    os.remove(os.path.join(directory, "6", manifest.part_name(0, 1)))
    assert checkpoint.verdict(directory, 6).status == "unfinished"
    ckpt = Checkpointer(run, every=1, keep=3)
    lines = []
    assert ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append) == (None, None)
    ckpt.close()
    assert "no manifest" in lines[0] and lines[-1].startswith("== moved newer steps [6]")
    assert checkpoint.step_numbers(directory) == []


def _fail_reads_of(monkeypatch, step: int, errors: list):
    """Orbax's restore of `step` raises the next error of `errors` (None: reads)."""
    real = ocp.CheckpointManager.restore
    calls = []

    def restore(self, s, *a, **k):
        if s == step:
            calls.append(s)
            e = errors.pop(0) if errors else None
            if e is not None:
                raise e
        return real(self, s, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    monkeypatch.setattr(checkpoint, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    return calls


def test_a_read_error_that_persists_is_retried_then_one_line_and_nothing_moves(run, monkeypatch):
    eio = lambda: OSError(errno.EIO, "Input/output error")
    _fail_reads_of(monkeypatch, 6, [eio() for _ in range(10)])
    ckpt = Checkpointer(run, every=1, keep=3)
    lines = []
    with pytest.raises(ReadError) as e:
        ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append)
    ckpt.close()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint step 6: reading its config failed: ")
    assert "OSError: [Errno 5] Input/output error" in msg and "not damage" in msg
    retries = [line for line in lines if "trying again in" in line]
    assert len(retries) == 3 and retries[-1].endswith("(3/3)"), lines
    assert not any("step 3" in line for line in lines)  # no fallback
    assert not os.path.exists(os.path.join(run, "checkpoints_set_aside"))
    assert checkpoint.step_numbers(os.path.join(run, "checkpoints")) == [6, 3]


def test_a_transient_error_that_clears_resumes_from_the_newest_step(run, monkeypatch):
    calls = _fail_reads_of(monkeypatch, 6, [None, None, TimeoutError("store timed out")])
    ckpt = Checkpointer(run, every=1, keep=3)
    lines = []
    state, step = ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append)
    ckpt.close()
    assert step == 6 and float(state.params["w"][1]) == 6.0
    assert len(calls) == 4  # config, digest, state (failed), state again
    assert [line for line in lines if "trying again" in line] == [
        "== checkpoint step 6: reading its state: TimeoutError: store timed out; "
        "trying again in 0 s (1/3)"
    ]


def test_any_other_read_error_stops_at_once_naming_step_and_error(run, monkeypatch):
    _fail_reads_of(monkeypatch, 6, [None, None, RuntimeError("RESOURCE_EXHAUSTED: out of memory")])
    ckpt = Checkpointer(run, every=1, keep=3)
    lines = []
    with pytest.raises(ReadError, match=r"step 6: reading its state failed: RuntimeError: RES"):
        ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append)
    ckpt.close()
    assert not [line for line in lines if "trying again" in line]
    assert not os.path.exists(os.path.join(run, "checkpoints_set_aside"))


def test_steps_saved_before_manifests_load_unverified_with_one_line(run):
    directory = os.path.join(run, "checkpoints")
    for s in (3, 6):
        os.remove(os.path.join(directory, str(s), manifest.part_name(0, 1)))
    os.remove(os.path.join(directory, manifest.MARKER))
    ckpt = Checkpointer(run, every=1, keep=3)  # a run of the new code in an old workdir
    assert manifest.read_since(directory) == 7  # steps it saves from now on have manifests
    lines = []
    state, step = ckpt.restore_good(_abstract(), None, CONFIG, 0, lines.append)
    assert step == 6 and lines == [
        "== checkpoint step 6 was saved before checkpoints had manifests: its files are read "
        "unverified"
    ]
    ckpt.save(7, _state(7), _Iterator(), CONFIG)
    ckpt.close()
    assert checkpoint.verdict(directory, 7).status == "intact"


def test_a_multi_process_manifest_needs_every_part(tmp_path):
    """Two processes' shares (written here by one process, as each would): each hashes half
    the files; verification shares the hashing the same way; a missing part is damage."""
    step_dir = tmp_path / "checkpoints" / "5"
    (step_dir / "state").mkdir(parents=True)
    for i in range(5):
        (step_dir / "state" / f"f{i}").write_bytes(bytes([i]) * (100 + i))
    (tmp_path / "checkpoints" / manifest.MARKER).write_text('{"since": 0}')
    manifest.write(step_dir, 0, 2)
    manifest.write(step_dir, 1, 2)
    parts = [json.load(open(step_dir / manifest.part_name(p, 2))) for p in (0, 1)]
    assert [len(p["files"]) for p in parts] == [3, 2] and parts[0]["total"] == 5
    for share in ((0, 2), (1, 2)):
        assert manifest.check(step_dir, 5, 0, share).status == "intact"
    _flip(step_dir / "state" / "f1", at=0)  # files sorted: f1 is process 1's share
    assert manifest.check(step_dir, 5, 0, (0, 2)).status == "intact"  # not its share
    v = manifest.check(step_dir, 5, 0, (1, 2))
    assert v.status == "damaged" and v.file.endswith("state/f1"), v
    os.remove(step_dir / manifest.part_name(1, 2))
    v = manifest.check(step_dir, 5, 0, (0, 2))
    assert v.status == "damaged" and v.reason == "manifest part missing", v


def test_params_only_reads_and_init_sources_go_through_the_door(run, no_orbax_reads):
    from metalm_jax.convert.common import ConversionError
    from metalm_jax.training.init_from import orbax_checkpoint_dir

    directory = os.path.join(run, "checkpoints")
    _truncate(_largest_data_file(os.path.join(directory, "6")))
    lines = []
    assert orbax_checkpoint_dir(run, lines.append) == os.path.join(directory, "3")
    assert len(lines) == 1 and lines[0].startswith("== checkpoint step 6: ")
    with pytest.raises(ConversionError, match=r"^checkpoint step 6: .*: size \d+, manifest"):
        orbax_checkpoint_dir(os.path.join(directory, "6"))


def test_restore_params_reads_the_newest_intact_step_quietly(run, caplog):
    directory = os.path.join(run, "checkpoints")
    _flip(_largest_data_file(os.path.join(directory, "6")))
    ckpt = Checkpointer(run, every=0, keep=2, create=False)
    lines = []
    caplog.set_level(logging.WARNING)
    params, step = ckpt.restore_params(_abstract().params, None, lines.append)
    ckpt.close()
    assert step == 3 and np.asarray(params["w"])[1] == 3.0 and len(lines) == 1
    # read through a manager that knows every item: no "Metadata file does not exist" etc.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert checkpoint.step_numbers(directory) == [6, 3]  # reading moves nothing
