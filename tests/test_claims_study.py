"""The claims study script (benchmarks/claims_study.py) end to end, in its smoke version: every
stage runs through the real CLIs with 2 steps per run (the test split's evaluation of the chosen
LR and the flipped in-context demonstrations included); tables, JSON and the plot are written."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_claims_study_smoke(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "benchmarks/claims_study.py", f"--out={out}", "--smoke",
           "--seeds=0", "--variants=a,d", "--tasks=kjv_books"]  # fmt: skip
    # One persistent compilation cache for the study's runs (CI time): several compile the
    # same functions of the same model (instruct loads multitask's steps: ~60 s -> ~20 s);
    # they run one after another and none is killed, so every entry read is complete.
    cache = tmp_path / "jax_cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache)}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.load(open(out / "study.json"))
    assert set(r["finetune"]["kjv_books"]) == {"a", "d"}
    assert set(r["finetune"]["kjv_books"]["a"]) == {"0.001"}  # the one LR of the default grid
    test = r["test"]["kjv_books"]["a"]  # the chosen LR on test: interval, majority, macro-F1
    assert test["lr"] == "0.001" and len(test["interval"]) == 2 and 0 < test["majority"] <= 1
    assert set(r["icl"]) == {"before", "before, flipped labels", "after"}
    assert "0shot/calibrated/accuracy_mean" in r["icl"]["after"]
    assert "table" in r["multitask"]["multitask"]["multitask"]
    assert "held_out" in r["multitask"]["instruct"]
    md = (out / "study.md").read_text()
    assert "| (a) | MetaLM, decoder frozen" in md and "python -m metalm_jax.train" in md
    assert "on test (the LR chosen on validation" in md and "majority rate" in md
    assert (out / "study.png").stat().st_size > 1000
    # finished runs are skipped: a second call reruns nothing
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "== " not in again.stdout
