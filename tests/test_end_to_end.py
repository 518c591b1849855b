"""The whole trainer on a micro config: train, write metrics/TensorBoard/checkpoints, resume."""

import json
import os

import pytest

from metalm_jax.train.loop import train_and_evaluate


@pytest.mark.slow
def test_train_then_resume(corpus, tmp_path):
    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    workdir = str(tmp_path / "run")
    first = train_and_evaluate(cfg, workdir)
    assert first["step"] == 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
    assert "eval/loss" in first and isinstance(first["sample"], str)

    cfg.train.steps = 9
    second = train_and_evaluate(cfg, workdir)  # resumes at 6, trains 3 more
    assert second["step"] == 9
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [2, 4, 6, 8, 9]
    assert all(r["perf/tokens_per_s"] > 0 for r in records if "train/loss" in r)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(os.path.join(workdir, "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")][:3] == [2, 4, 6]
    assert "eval/perplexity" in ea.Tags()["scalars"]
