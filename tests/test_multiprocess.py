"""Two real processes on localhost (CPU collectives, 4 simulated devices each): train,
checkpoint, stop, resume, and match a single-process run on the same global batches."""

import json
import os
import subprocess
import sys

import pytest

from tests._procs import ROOT, cpu_env, free_port, run_processes


def _run_two(config_arg, workdir, steps):
    argv = [
        sys.executable,
        "-m",
        "metalm_jax.train",
        "--config",
        os.path.join(ROOT, "tests", "micro_config.py") + ":" + config_arg,
        "--workdir",
        workdir,
        f"--config.train.steps={steps}",
        "--config.train.sample_tokens=0",
        "--config.train.batch_size=8",
        "--config.optim.schedule=constant",  # same LR whatever train.steps says
    ]
    outs = run_processes(argv, 2, 4)
    return outs


@pytest.mark.slow
def test_two_processes_train_resume_and_match_one(corpus, tmp_path):
    cfg, _ = corpus
    config_arg = f"{cfg.data.files[0]},{cfg.data.tfds_data_dir}"
    workdir = str(tmp_path / "run")
    first = _run_two(config_arg, workdir, 4)
    assert "2 process(es)" in first[0] and "step      4/4" in first[0]
    assert "step" not in first[1].replace("steps", "")  # only process 0 logs
    second = _run_two(config_arg, workdir, 6)
    assert "resumed from" in second[0] and "step      6/6" in second[0]
    files = os.listdir(os.path.join(workdir, "checkpoints", "6", "data"))
    assert sorted(f for f in files if f.endswith(".json")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    # each process wrote its share of the manifest; the step verifies from the files
    from metalm_jax.training import checkpoint

    step_dir = os.path.join(workdir, "checkpoints", "6")
    parts = sorted(f for f in os.listdir(step_dir) if f.startswith("manifest."))
    assert parts == ["manifest.process_0-of-2.json", "manifest.process_1-of-2.json"]
    assert checkpoint.verdict(os.path.join(workdir, "checkpoints"), 6).status == "intact"

    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "_multiprocess_worker.py"),
            config_arg,
            workdir,
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=cpu_env(8),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert out["step"] == 6
    assert out["param_rel_l2"] <= 1e-5, out
    assert out["leaf_rel_max"] <= 1e-3, out  # see test_sharding: Adam on ~lr-sized biases


@pytest.mark.slow
def test_sigterm_on_one_process_stops_both_at_the_same_step(corpus, tmp_path):
    """A preemption's SIGTERM reaching one host only: the processes agree on the stop step at
    the next log step (an all-gather of the requests), both save that step, and both exit 0."""
    import queue
    import re
    import signal
    import threading
    import time

    cfg, _ = corpus
    workdir = str(tmp_path / "run")
    argv = [
        sys.executable,
        "-m",
        "metalm_jax.train",
        "--config",
        os.path.join(ROOT, "tests", "micro_config.py")
        + f":{cfg.data.files[0]},{cfg.data.tfds_data_dir}",
        "--workdir",
        workdir,
        "--config.train.steps=100000",
        "--config.train.batch_size=8",
        "--config.train.log_every=2",  # the processes agree every 2 steps
        "--config.train.checkpoint_every=0",  # the only save is the stop's
        "--config.train.eval_every=0",
        "--config.train.sample_tokens=0",
    ]
    port = free_port()
    procs, lines, readers = [], [], []
    for i in range(2):
        flags = [
            "--multihost",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
        ]
        proc = subprocess.Popen(
            argv + flags,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cpu_env(4, cache=False),
            cwd=ROOT,
        )
        got: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda p=proc, q=got: [q.put(x) for x in p.stdout])
        reader.start()
        readers.append(reader)
        procs.append(proc)
        lines.append(got)
    out = ["", ""]
    try:
        deadline = time.time() + 600
        while not re.search(r"^step +4/", out[0], re.M):  # compiled and training
            assert time.time() < deadline and procs[0].poll() is None, out[0][-3000:]
            try:
                out[0] += lines[0].get(timeout=1)
            except queue.Empty:
                pass
        procs[1].send_signal(signal.SIGTERM)  # process 1 only
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for reader in readers:
        reader.join(timeout=60)
    for i in range(2):
        while not lines[i].empty():
            out[i] += lines[i].get_nowait()
    for p, o in zip(procs, out, strict=True):
        assert p.returncode == 0, o[-3000:]
        assert "Traceback" not in o, o[-3000:]
    stop = int(re.search(r"^== stopping at step (\d+)", out[0], re.M).group(1))
    assert stop % 2 == 0 and stop >= 4, out[0][-2000:]
    assert f"== saved {workdir}/checkpoints/{stop}; run the same command" in out[0]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(stop), "manifests.json"]
    data = os.listdir(os.path.join(workdir, "checkpoints", str(stop), "data"))
    assert sorted(f for f in data if f.endswith(".json")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
