"""Elastic restore (issue 13, item 6): a checkpoint written on 8 devices restores on 4 and on 1
with bitwise the same state, and a resume there continues the data exactly; resumed by another
number of processes, the run says in one line that the data iterators start afresh, and trains
on. Every device count is simulated on CPU in a subprocess (XLA_FLAGS)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests._procs import ROOT, cpu_env, run_processes

# Restores step argv[2] of run argv[1] onto each mesh of argv[3] (over the first devices) and
# prints a SHA-256 of every array of the state, with how many arrays are split over devices.
_STATE_HASHES = """
import hashlib, json, sys
import jax, numpy as np, orbax.checkpoint as ocp
from metalm_jax.config import with_defaults
from metalm_jax.data.tokenizer import Tokenizer
from metalm_jax.model.build import derive
from metalm_jax.parallel.mesh import make_mesh
from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.trainer import build_trainer

workdir, step = sys.argv[1], int(sys.argv[2])
ckpt = Checkpointer(workdir, 0, 2)
saved = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
cfg = with_defaults(saved["config"])
path = workdir + "/tokenizer.model"
tok = Tokenizer(open(path, "rb").read(), path)
out = {}
for shape in json.loads(sys.argv[3]):
    n = int(np.prod(shape))
    mesh = make_mesh(shape, jax.devices()[:n])
    trainer = build_trainer(cfg, mesh, derive(cfg, tok))
    with jax.set_mesh(mesh):
        state = ckpt.restore(step, trainer.abstract_state, None, cfg.to_dict())
    h = hashlib.sha256()
    for p, x in jax.tree_util.tree_leaves_with_path(state):
        h.update(jax.tree_util.keystr(p).encode() + np.asarray(x).tobytes())
    split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state))
    out[n] = {"sha256": h.hexdigest(), "split_arrays": split, "step": int(state.step)}
ckpt.close()
print("RESULT " + json.dumps(out))
"""


def _train_argv(corpus, workdir, *flags) -> list[str]:
    cfg, _ = corpus
    config = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    argv = [sys.executable, "-m", "metalm_jax.train", "--config", config, f"--workdir={workdir}"]
    argv += [f"--config.train.{k}" for k in ("steps=6", "batch_size=8", "checkpoint_every=2")]
    argv += [f"--config.train.{k}" for k in ("log_every=1", "eval_every=0", "sample_tokens=0")]
    return [*argv, *flags]


def _train(corpus, workdir, devices: int, *flags) -> str:
    proc = subprocess.run(
        _train_argv(corpus, workdir, *flags),
        capture_output=True,
        text=True,
        env=cpu_env(devices),
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _losses(workdir) -> dict:
    """{step: train/loss}, the last one logged for the step."""
    lines = open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")
    recs = [json.loads(line) for line in lines]
    return {r["step"]: r["train/loss"] for r in recs if "train/loss" in r}


def _data_positions(workdir, step) -> dict:
    d = os.path.join(workdir, "checkpoints", str(step), "data")
    return {n: json.load(open(os.path.join(d, n))) for n in os.listdir(d) if n.endswith(".json")}


@pytest.fixture(scope="module")
def run_on_8(corpus, tmp_path_factory):
    """A 6-step micro run on 8 devices, mesh 2 x 2 x 2 (parameters split over fsdp and
    tensor), checkpoints at steps 2, 4 and 6."""
    workdir = str(tmp_path_factory.mktemp("elastic") / "run8")
    out = _train(corpus, workdir, 8, "--config.mesh.shape=(2,2,2)")
    assert "== mesh {'data': 2, 'fsdp': 2, 'tensor': 2} on 8 cpu devices" in out
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "2",
        "4",
        "6",
        "manifests.json",
    ]
    return workdir


@pytest.mark.slow
def test_8_device_checkpoint_restores_bitwise_on_4_and_1(run_on_8):
    meshes = json.dumps([[2, 2, 2], [1, 2, 2], [1, 1, 1]])
    proc = subprocess.run(
        [sys.executable, "-c", _STATE_HASHES, run_on_8, "4", meshes],
        capture_output=True,
        text=True,
        env=cpu_env(8),
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert sorted(got) == ["1", "4", "8"] and all(r["step"] == 4 for r in got.values())
    assert got["8"]["split_arrays"] > 0 and got["4"]["split_arrays"] > 0  # really resharded
    assert got["1"]["split_arrays"] == 0
    assert got["8"]["sha256"] == got["4"]["sha256"] == got["1"]["sha256"], got


@pytest.mark.slow
@pytest.mark.parametrize("devices", [4, 1])
def test_resume_on_fewer_devices_continues_the_data_exactly(run_on_8, corpus, tmp_path, devices):
    """From step 4 of the 8-device run on `devices` devices (one process, like the run): the
    data position after steps 5 and 6 is the 8-device run's, and so are the losses of those
    steps, up to the float32 reduction order of another mesh."""
    workdir = str(tmp_path / f"run{devices}")
    shutil.copytree(run_on_8, workdir)
    out = _train(corpus, workdir, devices, "--config.train.restore_step=4")
    assert f"on {devices} cpu devices, 1 process(es)" in out
    assert f"== resumed from {workdir}/checkpoints/4\n" in out
    assert "== data:" not in out  # the same process count: no reset
    assert _data_positions(workdir, 6) == _data_positions(run_on_8, 6)
    want, got = _losses(run_on_8), _losses(workdir)
    assert got[5] == pytest.approx(want[5], rel=1e-5)  # the same parameters, the same batch
    assert got[6] == pytest.approx(want[6], rel=1e-4)  # after one update on another mesh


@pytest.mark.slow
def test_resume_by_two_processes_says_the_data_starts_afresh(run_on_8, corpus, tmp_path):
    """The 1-process, 8-device checkpoint resumed by 2 processes of 4 devices: the state
    restores (digests verified), one line says what happens to the data, both train on."""
    workdir = str(tmp_path / "run2")
    shutil.copytree(run_on_8, workdir)
    argv = _train_argv(corpus, workdir, "--config.train.restore_step=4")
    outs = run_processes(argv, 2, 4)
    said = [line for line in outs[0].splitlines() if line.startswith("== data:")]
    assert said == [
        "== data: checkpoint step 4 holds the data positions of 1 process(es), this run has 2: "
        "the training data is re-sharded and every process's iterator starts from the "
        "beginning of its new shard (documents trained on before are seen again; parameters "
        "and optimizer state are restored exactly)"
    ], outs[0][-3000:]
    assert f"== resumed from {workdir}/checkpoints/4\n" in outs[0]
    assert re.search(r"^step +6/6 ", outs[0], re.M)
    assert sorted(_data_positions(workdir, 6)) == ["process_0-of-2.json", "process_1-of-2.json"]
