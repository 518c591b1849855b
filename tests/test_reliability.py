"""Reliability (issue 13): the workdir lock, the non-finite guard, clean stops on signals.

The lock's rules are tested on the lock itself (no JAX); the guard on the jitted step and on
whole micro runs with a huge learning rate; signals on real training processes.
"""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.training import workdir_lock
from metalm_jax.training.workdir_lock import WorkdirBusyError, WorkdirLock
from tests._procs import children, wait_gone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- workdir lock -------------------------------------------------------------------------


def _write_lock(workdir, **record):
    os.makedirs(workdir, exist_ok=True)
    now = time.time()
    rec = {"host": socket.gethostname(), "started": now, "refreshed": now, "token": "x"}
    rec.update(record)
    with open(os.path.join(workdir, workdir_lock.LOCK_NAME), "w", encoding="utf-8") as f:
        json.dump(rec, f)


def test_lock_refuses_a_live_holder_and_names_it(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(tmp_path, pid=holder.pid, started=0.0)
        with pytest.raises(WorkdirBusyError) as e:
            WorkdirLock(str(tmp_path)).acquire()
        msg = str(e.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in msg
        assert "started 1970-01-0" in msg and "\n" not in msg
    finally:
        holder.kill()
        holder.wait()
    logs = []  # now the holder is gone: taken over, with a message
    lock = WorkdirLock(str(tmp_path), log=logs.append)
    lock.acquire()
    assert "took over" in logs[0] and f"pid {holder.pid}" in logs[0] and "gone" in logs[0]
    path = tmp_path / workdir_lock.LOCK_NAME
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(WorkdirBusyError):  # held by this process: busy, not a reused pid
        WorkdirLock(str(tmp_path)).acquire()
    lock.release()
    assert not path.exists()


def test_lock_of_another_host_is_stale_when_its_lease_expires(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=1, refreshed=time.time() - 60)
    with pytest.raises(WorkdirBusyError, match="pid 1 on host elsewhere"):
        WorkdirLock(str(tmp_path), lease_minutes=2).acquire()
    logs = []
    lock = WorkdirLock(str(tmp_path), lease_minutes=0.5, log=logs.append)
    lock.acquire()
    assert "host elsewhere" in logs[0] and "lease" in logs[0]
    before = lock.record["refreshed"]
    time.sleep(0.01)
    assert lock.refresh() and lock.record["refreshed"] > before
    path = tmp_path / workdir_lock.LOCK_NAME
    assert json.loads(path.read_text())["refreshed"] == lock.record["refreshed"]
    lock.release()
    assert not path.exists()


def test_lock_of_this_pid_not_held_here_is_a_reused_pid(tmp_path):
    """A container restart can give the new run its predecessor's pid."""
    _write_lock(tmp_path, pid=os.getpid(), token="a predecessor's")
    logs = []
    lock = WorkdirLock(str(tmp_path), log=logs.append)
    lock.acquire()
    assert "now this process's" in logs[0]
    lock.release()


# -- non-finite guard ---------------------------------------------------------------------


@pytest.mark.slow
def test_skip_policy_step_keeps_params_and_optimizer_state():
    from metalm_jax.data.spans import SpanConfig
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer

    cfg = testing.micro_config()
    cfg.train.nonfinite = "skip"
    cfg.optim.warmup_steps = 0  # the skipped step did not advance the schedule: lr 0 at count 0
    mesh = make_mesh(cfg.mesh.shape)
    trainer = build_trainer(cfg, mesh)
    batch = testing.random_batch(4, 64, cfg.data.vocab_size, SpanConfig(4, 8, 0.25, 24))
    bad = dict(batch, loss_weights=np.full_like(batch["loss_weights"], np.nan))
    with jax.set_mesh(mesh):
        state = trainer.init(jax.random.key(0))
        before = jax.device_get((state.params, state.opt_state))
        state, m = trainer.step(state, trainer.global_batch(bad))  # donates the old state
        assert not bool(m["finite"]) and int(state.step) == 1
        after = jax.device_get((state.params, state.opt_state))
        jax.tree.map(np.testing.assert_array_equal, after, before)
        state, m = trainer.step(state, trainer.global_batch(batch))
        assert bool(m["finite"]) and int(state.step) == 2
        moved = jax.device_get(state.params)
    pairs = zip(jax.tree.leaves(moved), jax.tree.leaves(before[0]), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def _checkpoint_steps(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _saved_state_finite(workdir, step) -> bool:
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "state")
    state = ocp.StandardCheckpointer().restore(path)
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))


def _huge_lr(corpus, policy):
    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    cfg.optim.lr = 1e6  # the repro: NaN within a few steps
    cfg.train.nonfinite, cfg.train.max_skipped = policy, 3
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every = 10, 1, 0
    cfg.train.sample_tokens = 0
    return cfg


@pytest.mark.slow
def test_nonfinite_stop_names_the_step_and_saves_nothing_non_finite(corpus, tmp_path):
    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.training.guard import NonFiniteError

    cfg = _huge_lr(corpus, "stop")
    cfg.train.log_every = 20  # the flags are read before each save, not only when logging
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError) as e:
        train_and_evaluate(cfg, workdir)
    msg = str(e.value)
    assert re.match(r"step (\d+) is not finite \(loss nan", msg) and "\n" not in msg, msg
    bad = int(re.match(r"step (\d+)", msg).group(1))
    steps = _checkpoint_steps(workdir)
    assert steps and steps[-1] == bad - 1  # checkpoint_every=1: every finite step was saved
    assert f"latest checkpoint is {workdir}/checkpoints/{bad - 1} " in msg
    assert all(_saved_state_finite(workdir, s) for s in steps)
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))  # released


@pytest.mark.slow
def test_nonfinite_skip_counts_steps_and_keeps_params_finite(corpus, tmp_path):
    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.training.guard import NonFiniteError

    cfg = _huge_lr(corpus, "skip")
    cfg.train.log_every = 1
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"^step (\d+) is not finite, 3 steps in a row"):
        train_and_evaluate(cfg, workdir)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    skipped = [r["train/skipped_steps"] for r in records if "train/skipped_steps" in r]
    assert skipped[-2:] == [1, 2], skipped  # the 3rd raised before its log line
    steps = _checkpoint_steps(workdir)
    assert steps and all(_saved_state_finite(workdir, s) for s in steps)


# -- signals: real training processes -------------------------------------------------------


class _Run:
    """A training process on the micro config whose stdout lines are read as they come."""

    def __init__(self, corpus, workdir, *flags, steps: int = 100000, jax_cache=None):
        cfg, _ = corpus
        config = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
        argv = [sys.executable, "-m", "metalm_jax.train", "--config", config]
        argv += [f"--workdir={workdir}", f"--config.train.steps={steps}"]
        argv += [f"--config.train.{k}" for k in ("log_every=1", "eval_every=0", "sample_tokens=0")]
        self.stderr_path = f"{workdir}.{time.monotonic_ns()}.stderr"
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # the session's compilation cache
        if jax_cache:  # a persistent compilation cache shared by the runs of one test
            env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
        elif jax_cache is False:  # none: this start compiles
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [*argv, *flags], stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT
            )
        self.lines: queue.Queue = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.time() + timeout
        while True:
            line = self.lines.get(timeout=max(deadline - time.time(), 0.01))
            assert line is not None, f"exited before {pattern!r}:\n{self.finish()[1][-3000:]}"
            self.stdout.append(line)
            if m := re.search(pattern, line):
                return m

    def finish(self, timeout: float = 300) -> tuple[str, str]:
        """Waits for the exit; (whole stdout, stderr)."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                self.stdout.append(line)
        return "".join(self.stdout), open(self.stderr_path).read()


@pytest.mark.slow
def test_sigterm_saves_exits_0_and_resumes_and_the_workdir_is_locked_meanwhile(corpus, tmp_path):
    """On prepared rows read by two worker processes (data.workers=2): no process the run
    started (workers, multiprocessing's resource tracker) outlives it, and the resumed run
    (ended by Ctrl-C) reads with one worker."""
    from metalm_jax.data.feed import prepare

    cfg, tok = corpus
    c = cfg.copy_and_resolve_references()
    with c.unlocked():
        c.data.tokenizer_path, c.data.prepared_dir = tok.source, str(tmp_path / "prepared")
    prepare.prepare(c, log=lambda line: None)
    data = f"--config.data.prepared_dir={c.data.prepared_dir}"
    workdir = str(tmp_path / "run")
    run = _Run(
        corpus, workdir, "--config.train.checkpoint_every=2", data, "--config.data.workers=2"
    )
    run.wait_for(r"^step +3/")
    started = children(run.proc.pid)
    assert len([p for p, cmd in started.items() if "spawn_main" in cmd]) == 2, started
    other = _Run(corpus, workdir)  # a second run on the busy workdir refuses to start
    out, err = other.finish()
    assert other.proc.returncode != 0
    assert f"in use by another run (pid {run.proc.pid} on host {socket.gethostname()}" in err
    assert "step " not in out and run.proc.poll() is None

    run.proc.send_signal(signal.SIGTERM)
    reached = int(run.wait_for(r"^== stopping at step (\d+)").group(1))
    out, err = run.finish()
    assert run.proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert _checkpoint_steps(workdir)[-1] == reached
    assert f"== saved {workdir}/checkpoints/{reached}; run the same command" in out
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))
    assert wait_gone(started) == [], started

    again = _Run(
        corpus, workdir, "--config.train.checkpoint_every=0", data, "--config.data.workers=1"
    )
    again.wait_for(rf"^== resumed from {re.escape(workdir)}/checkpoints/{reached}$")
    again.wait_for(rf"^step +{reached + 2}/")
    again.proc.send_signal(signal.SIGINT)
    stopped = int(again.wait_for(r"^== stopping at step (\d+)").group(1))
    out, err = again.finish()
    assert again.proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert stopped > reached and _checkpoint_steps(workdir)[-1] == stopped


@pytest.mark.slow
def test_double_sigterm_does_not_abort_the_save(corpus, tmp_path):
    workdir = str(tmp_path / "run")
    run = _Run(corpus, workdir, "--config.train.checkpoint_every=1")  # a save always in flight
    run.wait_for(r"^step +4/")
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    out, err = run.finish()
    assert run.proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    reached = int(re.search(r"^== stopping at step (\d+)", out, re.M).group(1))
    assert "SIGTERM again: still " in out
    assert _checkpoint_steps(workdir)[-1] == reached
    assert _saved_state_finite(workdir, reached)


def test_a_signal_during_the_stop_agreement_waits_for_the_next_one(monkeypatch):
    """Two processes (faked): the signal reaches this one while the all-gather of the stop
    requests runs, after it contributed 'no request'. The other process received only 'no', so
    this one must not stop either (it would wait forever in the next step's collective, as the
    other would in the save's); the request goes into the next gather and both stop there."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from metalm_jax.training.preemption import StopSignals

    stop = StopSignals(sync_every=2)
    others = np.int32(0)  # the other process never got a signal
    gathers = []

    def allgather(mine):
        if not gathers:  # the signal arrives during the first gather
            stop._handle(signal.SIGTERM, None)
        gathers.append(int(mine))
        return np.stack([np.asarray(mine), others])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    assert not stop.requested(2) and stop.signum == signal.SIGTERM and stop.stopping() is None
    assert not stop.requested(3)  # no gather between log steps
    assert stop.requested(4) and stop.stopping() == signal.SIGTERM
    assert stop.requested(5)  # agreed: stays stopped
    assert gathers == [0, int(signal.SIGTERM)]

    heard = StopSignals(sync_every=2)  # the other side: a request from elsewhere stops it too
    monkeypatch.setattr(
        multihost_utils,
        "process_allgather",
        lambda mine: np.stack([mine, np.int32(signal.SIGTERM)]),
    )
    assert heard.requested(2) and heard.stopping() == signal.SIGTERM and heard.signum is None


@pytest.mark.slow
def test_preemption_notice_saves_and_stops_like_sigterm(corpus, tmp_path, monkeypatch, capsys):
    """JAX's preemption service (TPU VMs) is replaced by a notice at step 3: the loop asks it at
    every step (through Orbax's CheckpointManager.reached_preemption), saves step 3 and stops
    with SIGTERM's exit status 0."""
    from jax.experimental import multihost_utils

    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.training.preemption import Stopped

    asked = []

    def notice(step):
        asked.append(step)
        return step == 3

    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", notice)
    cfg = _resume_cfg(corpus, 10)
    cfg.train.checkpoint_every = 0  # the only save is the preemption's
    workdir = str(tmp_path / "run")
    capsys.readouterr()
    with pytest.raises(Stopped) as e:
        train_and_evaluate(cfg, workdir)
    assert e.value.exit_code == 0 and e.value.step == 3
    # every step, as the protocol requires (Orbax's save asks again for the step it saves)
    assert asked[:4] == [0, 1, 2, 3] and set(asked) == {0, 1, 2, 3}, asked
    out = capsys.readouterr().out
    assert "== preemption notice at step 3: saving a checkpoint and exiting\n" in out
    assert re.search(r"^step +3/10 ", out, re.M) and not re.search(r"^step +4/", out, re.M)
    assert f"== saved {workdir}/checkpoints/3; run the same command again" in out
    assert _checkpoint_steps(workdir) == [3] and _saved_state_finite(workdir, 3)
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))


def _losses(workdir) -> dict:
    """{step: [train/loss of every log line of that step]}; a line cut by a kill is skipped."""
    out: dict = {}
    for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8"):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "train/loss" in rec:
            out.setdefault(rec["step"], []).append(rec["train/loss"])
    return out


def _saved(workdir, step):
    """(every array of the step's state as numpy, in tree order; its data-iterator JSON)."""
    import orbax.checkpoint as ocp

    step_dir = os.path.join(workdir, "checkpoints", str(step))
    state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
    data = open(os.path.join(step_dir, "data", "process_0-of-1.json")).read()
    return [np.asarray(x) for x in jax.tree.leaves(state)], json.loads(data)


def _resumable_step(workdir) -> int:
    """The newest step a resume takes (0: none): the newest intact one. A kill between a save's
    commit and its manifest leaves a step that is not trusted (training/manifest.py)."""
    from metalm_jax.training import checkpoint

    directory = os.path.join(workdir, "checkpoints")
    intact = (s for s in checkpoint.step_numbers(directory) if _intact(directory, s))
    return next(intact, 0)


def _intact(directory, step) -> bool:
    from metalm_jax.training import checkpoint

    return checkpoint.verdict(directory, step).status == "intact"


def _unfinished_saves(workdir) -> dict:
    """{name: mtime} of Orbax's temporary step directories (renamed when a save completes)."""
    d = os.path.join(workdir, "checkpoints")
    names = os.listdir(d) if os.path.isdir(d) else []
    return {
        n: os.stat(os.path.join(d, n)).st_mtime_ns for n in names if ".orbax-checkpoint-tmp" in n
    }


KILLS = 10  # issue 13: >= 10


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_bitwise_equal(corpus, tmp_path):
    """SIGKILL at 10 random moments (while starting, while restoring or compiling, and while
    training with an async save in flight at every step), each time started again until the
    run ends: the final state and data position are bitwise those of an uninterrupted run,
    every step's loss as logged by any of the runs is the uninterrupted run's (no batch
    repeated or skipped), each start after a kill takes over the dead run's workdir lock.

    The reference run and the starts killed while training (and the last start) share a
    persistent compilation cache, so that they do not each compile the same steps (CI time);
    the starts killed while compiling do not use it: they compile as before. JAX writes an
    entry only after its compile; one cut by a kill fails to read (JAX warns, compiles)."""
    steps, flags = 16, ("--config.train.checkpoint_every=1",)
    ref_dir, workdir = str(tmp_path / "ref"), str(tmp_path / "run")
    cache = tmp_path / "jax_cache"
    ref = _Run(corpus, ref_dir, *flags, steps=steps, jax_cache=cache)  # alongside: untimed
    rng = np.random.default_rng(13)
    lock = os.path.join(workdir, workdir_lock.LOCK_NAME)
    kills, during_saves, found_locks, took_over = 0, 0, 0, 0
    procs = [ref.proc]
    try:
        while True:
            had_lock = os.path.exists(lock)  # a killed run's: its pid is dead
            latest = _resumable_step(workdir)  # where this start resumes
            left_before = _unfinished_saves(workdir)
            mode = ("starting", "compiling", "training", "training")[kills % 4]
            if mode == "training" and latest + 1 > steps - 3:
                mode = "compiling"  # no kill after the run could have ended
            # the cache only where the kill waits for a step line or there is none: a start
            # to kill while compiling compiles
            warm = kills == KILLS or mode == "training"
            run = _Run(corpus, workdir, *flags, steps=steps, jax_cache=cache if warm else False)
            procs.append(run.proc)
            if kills == KILLS:  # the last start runs to the end
                out, err = run.finish(timeout=900)
                assert run.proc.returncode == 0, err[-3000:]
            else:
                if mode == "starting":
                    time.sleep(rng.uniform(0.5, 4.0))
                elif mode == "compiling":  # built the model; restores, initialises or compiles
                    run.wait_for(r"^== params ", timeout=900)
                    time.sleep(rng.uniform(0.0, 1.5))
                else:  # the step line is printed after the step's save started (async)
                    target = min(latest + 1 + int(rng.integers(0, 2)), steps - 3)
                    run.wait_for(rf"^step +{target}/", timeout=900)
                    time.sleep(rng.uniform(0.0, 0.4))
                if run.proc.poll() is not None:
                    pytest.fail(f"the run ended before its kill:\n{run.finish()[1][-3000:]}")
                run.proc.send_signal(signal.SIGKILL)
                kills += 1
                out, _ = run.finish()
                # this kill left an unfinished save behind (a new or rewritten temporary dir)
                during_saves += bool(_unfinished_saves(workdir).items() - left_before.items())
            if m := re.search(r"^== resumed from .*/checkpoints/(\d+)$", out, re.M):
                assert int(m.group(1)) == latest, out[-3000:]  # the newest step, not an older one
            first = re.search(r"^step +(\d+)/", out, re.M)
            assert first is None or int(first.group(1)) == latest + 1, out[-3000:]
            if had_lock and "\n== mesh " in out:  # got past the lock
                found_locks += 1
                took_over += "\n== took over the workdir lock of " in out
            if kills == KILLS and run.proc.returncode == 0:
                break
        out, err = ref.finish(timeout=900)
        assert ref.proc.returncode == 0, err[-3000:]
    finally:  # nothing left running if an assertion failed
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    want, got = _losses(ref_dir), _losses(workdir)
    assert sorted(want) == list(range(1, steps + 1)) and sorted(got) == sorted(want)
    for s, losses in got.items():  # logged once per run that reached the step
        assert losses == want[s] * len(losses), (s, losses, want[s])
    assert _checkpoint_steps(workdir)[-1] == steps
    ref_arrays, ref_data = _saved(ref_dir, steps)
    arrays, data = _saved(workdir, steps)
    assert data == ref_data
    assert len(arrays) == len(ref_arrays)
    for a, b in zip(arrays, ref_arrays, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert kills >= 10 and during_saves >= 1, (kills, during_saves)
    assert took_over == found_locks >= 5, (took_over, found_locks)  # every one taken over


# -- verified checkpoints: damage the newest step, the resume falls back -----------------------


def _flip_16_bytes(step_dir):
    """16 bytes inverted in the middle of the largest array data file of the step's state."""
    d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    path = max((os.path.join(d, n) for n in os.listdir(d)), key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    open(path, "wb").write(bytes(data))
    return path


def _truncate_a_data_file(step_dir):
    d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    path = max((os.path.join(d, n) for n in os.listdir(d)), key=os.path.getsize)
    os.truncate(path, os.path.getsize(path) // 2)
    return path


DAMAGE = {"flipped_bytes": _flip_16_bytes}  # every other kind: test_checkpoint_manifest.py


def _resume_cfg(corpus, steps):
    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every = steps, 3, 0
    cfg.train.log_every, cfg.train.sample_tokens = 1, 0
    return cfg


@pytest.fixture(scope="module")
def two_checkpoints(micro_run):
    """A micro run's workdir with checkpoints at steps 3 and 6 (the session's shared run:
    read-only, tests copy it)."""
    assert _checkpoint_steps(micro_run) == [3, 6]
    return micro_run


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    corpus, two_checkpoints, tmp_path, capsys, damage
):
    import shutil

    from metalm_jax.loop import train_and_evaluate

    workdir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, workdir)
    step_dir = os.path.join(workdir, "checkpoints", "6")
    DAMAGE[damage](step_dir)
    capsys.readouterr()
    train_and_evaluate(_resume_cfg(corpus, 7), workdir)
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "checkpoint step 6: " in line]
    assert len(said) == 1, out
    assert re.match(rf"== checkpoint step 6: {re.escape(step_dir)}/\S+: \S", said[0]), said[0]
    assert said[0].endswith("; trying the previous step") and len(said[0]) < 400, said[0]
    assert f"== resumed from {workdir}/checkpoints/3\n" in out
    assert re.search(r"^step +4/7 ", out, re.M)  # trained on from step 3
    assert _checkpoint_steps(workdir) == [3, 6, 7]  # 6 and 7 written by this run
    assert _saved_state_finite(workdir, 7)
    aside = os.path.join(workdir, "checkpoints_set_aside", "6")
    assert os.path.isdir(aside)  # the damaged step is kept, out of the way


def test_a_read_error_is_said_by_its_innermost_cause_without_the_store_spec():
    from metalm_jax.training import checkpoint

    line = checkpoint.short_error(_wrapped_read_error())
    assert line == 'ValueError: OUT_OF_RANGE: Error reading "params.w/0.0": Requested byte range'


def _wrapped_read_error() -> Exception:
    """Orbax's error for a failed chunk read: its text is the store's spec, its cause names the
    array and what is wrong."""
    inner = ValueError(
        'OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database at local file '
        '"/w/checkpoints/6/state/": Requested byte range [tensorstore_spec=\'{"a": 1}\']'
    )
    try:
        try:
            raise inner
        except ValueError as e:
            raise Exception(
                "Encountered error while reading array index. See full TensorStore details: "
                "{'kvstore': {'path': '/w/checkpoints/6/state/'}}" + " x" * 2000
            ) from e
    except Exception as e:  # noqa: BLE001
        return e


def _orbax_fails_on(monkeypatch, step: int, errors: list):
    """Orbax's restore of `step` raises the next of `errors` (None: reads); no retry waits."""
    import orbax.checkpoint as ocp

    from metalm_jax.training import checkpoint

    real = ocp.CheckpointManager.restore

    def restore(self, s, *a, **k):
        e = errors.pop(0) if s == step and errors else None
        if e is not None:
            raise e
        return real(self, s, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    monkeypatch.setattr(checkpoint, "RETRY_DELAYS", (0.0, 0.0, 0.0))


@pytest.mark.slow
def test_a_read_error_on_the_newest_intact_step_stops_the_run_and_moves_nothing(
    corpus, two_checkpoints, tmp_path, capsys, monkeypatch
):
    """The issue's pod case: an I/O error on every read of the newest (intact) step is retried,
    then stops the run in one line naming the step and the error; step 6 is not set aside and
    the run does not resume from step 3."""
    import errno
    import shutil

    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.training.checkpoint import ReadError

    workdir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, workdir)
    _orbax_fails_on(monkeypatch, 6, [OSError(errno.EIO, "Input/output error")] * 20)
    capsys.readouterr()
    with pytest.raises(ReadError, match=r"^checkpoint step 6: reading its config failed: OSE"):
        train_and_evaluate(_resume_cfg(corpus, 7), workdir)
    out = capsys.readouterr().out
    assert out.count("trying again in 0 s") == 3 and "resumed from" not in out, out
    assert _checkpoint_steps(workdir) == [3, 6]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_set_aside"))
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))


@pytest.mark.slow
def test_a_transient_read_error_that_clears_resumes_from_the_newest_step(
    corpus, two_checkpoints, tmp_path, capsys, monkeypatch
):
    import errno
    import shutil

    from metalm_jax.loop import train_and_evaluate

    workdir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, workdir)
    _orbax_fails_on(monkeypatch, 6, [None, None, OSError(errno.EIO, "Input/output error")])
    capsys.readouterr()
    train_and_evaluate(_resume_cfg(corpus, 7), workdir)
    out = capsys.readouterr().out
    assert (
        "== checkpoint step 6: reading its state: OSError: [Errno 5] Input/output error; "
        "trying again in 0 s (1/3)\n" in out
    ), out
    assert f"== resumed from {workdir}/checkpoints/6\n" in out
    assert _checkpoint_steps(workdir) == [3, 6, 7]


@pytest.mark.slow
def test_restore_step_picks_a_step_by_hand_and_names_the_steps_there_are(
    corpus, two_checkpoints, tmp_path, capsys
):
    import shutil

    from metalm_jax.loop import train_and_evaluate
    from metalm_jax.types import CheckpointError

    workdir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, workdir)
    cfg = _resume_cfg(corpus, 4)
    cfg.train.restore_step = 5
    want = r"train.restore_step=5: no such checkpoint .*\(have \[3, 6\]"
    with pytest.raises(CheckpointError, match=want):
        train_and_evaluate(cfg, workdir)
    cfg.train.restore_step = 3
    capsys.readouterr()
    train_and_evaluate(cfg, workdir)
    out = capsys.readouterr().out
    assert f"== resumed from {workdir}/checkpoints/3\n" in out
    assert _checkpoint_steps(workdir) == [3, 4]


# -- errors for people: one line, exit 2, no traceback ------------------------------------------


def _train_cli(config: str, workdir, *flags, timeout=300) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "metalm_jax.train", "--config", config, f"--workdir={workdir}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [*argv, *flags], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


def _last_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_user_errors_end_with_one_line_and_exit_2(corpus, two_checkpoints, tmp_path):
    import shutil

    cfg, _ = corpus
    micro = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    line = _last_line(_train_cli(micro, tmp_path / "a", "--config.train.stepz=5"))
    assert (
        line.startswith("error: --config.train.stepz: ") and 'did you mean "steps"' in line.lower()
    )

    missing = tmp_path / "missing.jsonl"
    config = f"{ROOT}/tests/micro_config.py:{missing},{cfg.data.tfds_data_dir}"
    line = _last_line(_train_cli(config, tmp_path / "b"))
    assert line == f"error: data.files: {str(missing)!r} does not exist", line
    verbose = _train_cli(config, tmp_path / "b", "--verbose")  # the traceback on request
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr

    # optim.frozen changed on an existing workdir (the TypeError in the first step)
    workdir = tmp_path / "run"
    shutil.copytree(two_checkpoints, workdir)
    unfrozen = tmp_path / "unfrozen_config.py"
    unfrozen.write_text(
        "from metalm_jax import testing\n\n\ndef get_config(arg=None):\n"
        f"    c = testing.micro_config([{cfg.data.files[0]!r}], "
        f"data_dir={cfg.data.tfds_data_dir!r})\n"
        "    c.optim.frozen = []\n    return c\n"
    )
    line = _last_line(_train_cli(str(unfrozen), workdir, "--config.train.steps=8"))
    assert line.startswith(f"error: checkpoint {workdir}/checkpoints/6 does not match this config")
    assert "optim.frozen: checkpoint ['^text_encoder/stack/layers_0/'], config []" in line, line


@pytest.mark.slow
def test_bad_corpus_files_end_with_one_line_naming_file_and_line(tmp_path):
    """The issue's table: non-UTF-8 bytes in a .txt and in a .jsonl corpus (file and line
    named, not a bare UnicodeDecodeError), an empty .jsonl as the whole corpus (the file named,
    not the split)."""
    bad_txt = tmp_path / "bad.txt"
    bad_txt.write_bytes(b"In the beginning\n\nGod created \xff the heaven.\n")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b'{"text": "one"}\n{"text": "two"}\n{"text": "th\xe9ree"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    want = {
        bad_txt: f"error: {bad_txt}:3: not UTF-8 (byte 0xff at line 3, column 13); "
        "expected a UTF-8 text file",
        bad_jsonl: f"error: {bad_jsonl}:3: not UTF-8 (byte 0xe9 at line 3, column 13); "
        "expected a UTF-8 text file",
        empty: f"error: {empty}: empty file; expected one JSON object per line",
    }
    for path, line in want.items():
        config = f"{ROOT}/tests/micro_config.py:{path},{tmp_path / ('tfds_' + path.name)}"
        got = _last_line(_train_cli(config, tmp_path / f"run_{path.name}"))
        assert got.startswith(line), got


@pytest.mark.slow
def test_nonfinite_with_a_save_in_flight_ends_with_the_error_line(corpus, tmp_path):
    """The issue's repro through the command line: lr 1e6, log every 20, a save at every step
    (each async save still being written while the next step runs). The NaN error is the last
    line: the loop waits for the save in flight before the error leaves it (without that wait
    the process exits under Orbax's writer threads: a page of 'cannot schedule new futures after
    shutdown' tracebacks follows the error and the save is left unfinished)."""
    cfg, _ = corpus
    micro = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    workdir = tmp_path / "run"
    flags = ["--config.optim.lr=1e6", "--config.train.log_every=20", "--config.train.steps=40"]
    flags += [f"--config.train.{k}" for k in ("checkpoint_every=1", "eval_every=0")]
    proc = _train_cli(micro, workdir, *flags, "--config.train.sample_tokens=0", timeout=900)
    line = _last_line(proc)
    m = re.match(r"error: step (\d+) is not finite \(loss nan", line)
    assert m, line
    assert "after shutdown" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert len(proc.stderr.splitlines()) < 30, proc.stderr[-3000:]
    bad = int(m.group(1))
    assert _checkpoint_steps(str(workdir))[-1] == bad - 1  # the save in flight completed
    assert not _unfinished_saves(str(workdir))
    assert _saved_state_finite(str(workdir), bad - 1)


@pytest.mark.slow
def test_checkpoint_fallback_on_the_command_line_is_one_line(corpus, two_checkpoints, tmp_path):
    """A truncated chunk in the newest step (TensorStore's read error carries a multi-KB spec):
    one line on stdout for the fallback, nothing of the read error on stderr."""
    import shutil

    cfg, _ = corpus
    micro = f"{ROOT}/tests/micro_config.py:{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    workdir = tmp_path / "run"
    shutil.copytree(two_checkpoints, workdir)
    _truncate_a_data_file(os.path.join(workdir, "checkpoints", "6"))
    flags = [f"--config.train.{k}" for k in ("steps=7", "log_every=1", "checkpoint_every=3")]
    flags += ["--config.train.eval_every=0", "--config.train.sample_tokens=0"]
    proc = _train_cli(micro, workdir, *flags, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if "checkpoint step 6" in line]
    assert len(said) == 1 and len(said[0]) < 400, said
    assert said[0].endswith("; trying the previous step"), said[0]
    assert "TensorStore details" not in said[0] and "pybind11" not in said[0], said[0]
    assert f"== resumed from {workdir}/checkpoints/3\n" in proc.stdout
    first = proc.stderr.find("Traceback")  # and what printed it: the record can be KBs long
    assert first < 0, proc.stderr[max(first - 8000, 0) : first + 1000]
    assert "checkpoint step 6" not in proc.stderr, proc.stderr[-3000:]
    assert max(map(len, proc.stderr.splitlines()), default=0) < 400, proc.stderr[-3000:]
    assert len(proc.stderr) < 4000, proc.stderr[-3000:]


# -- watchdog -----------------------------------------------------------------------------------


def test_watchdog_fires_only_when_armed_and_not_paused():
    from metalm_jax.training.watchdog import Watchdog

    fired = []
    dog = Watchdog(0.2, on_timeout=fired.append, poll_s=0.01)
    time.sleep(0.4)
    assert not fired  # not armed before the first beat (the first step compiles)
    dog.beat(1)
    with dog.paused():  # an eval or a save
        time.sleep(0.4)
    assert not fired
    for step in range(2, 8):  # steady progress
        time.sleep(0.05)
        dog.beat(step)
    assert not fired
    time.sleep(0.5)
    dog.close()
    assert len(fired) == 1 and fired[0].startswith("watchdog: no progress for 0 s after step 7 ")


_HANG_AT_STEP_4 = """
import sys, time
from metalm_jax import testing
from metalm_jax import loop

build = loop.build_trainer

def hanging_trainer(*args, **kwargs):
    trainer = build(*args, **kwargs)
    step, calls = trainer.step, []

    def hanging_step(state, batch):
        calls.append(1)
        if len(calls) == 4:
            time.sleep(600)
        return step(state, batch)

    trainer.step = hanging_step
    return trainer

loop.build_trainer = hanging_trainer
cfg = testing.micro_config([sys.argv[1]], data_dir=sys.argv[2])
cfg.train.steps, cfg.train.log_every, cfg.train.eval_every = 10, 1, 2
cfg.train.checkpoint_every, cfg.train.sample_tokens, cfg.train.watchdog_s = 2, 0, 5
loop.train_and_evaluate(cfg, sys.argv[3])
"""


@pytest.mark.slow
def test_watchdog_dumps_stacks_and_exits_when_a_step_hangs(corpus, tmp_path):
    """A step that never returns (step 4 sleeps) ends the process with status 124 and every
    thread's stack; the first step's compilation (unarmed) and the evals and saves of step 2
    (paused), each of which compiles, do not fire it."""
    cfg, _ = corpus
    argv = [sys.executable, "-c", _HANG_AT_STEP_4, cfg.data.files[0], cfg.data.tfds_data_dir]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    t0 = time.time()
    proc = subprocess.run(
        [*argv, str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 124, proc.stderr[-3000:]
    assert re.search(r"^step +3/10 ", proc.stdout, re.M), proc.stdout  # compile did not fire it
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"watchdog: no progress for \d+ s after step 3 \(train.watchdog_s=5\)", last)
    assert "Current thread" in proc.stderr and "in hanging_step" in proc.stderr
    assert time.time() - t0 < 280
