"""Two real processes on localhost (CPU collectives, 4 simulated devices each): train,
checkpoint, stop, resume, and match a single-process run on the same global batches."""

import json
import os
import subprocess
import sys

import pytest

from tests._procs import ROOT, cpu_env, run_processes


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
