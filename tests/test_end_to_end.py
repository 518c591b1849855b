"""The whole trainer on a micro config: train, write metrics/TensorBoard/checkpoints, resume."""

import json
import os
import shutil

import pytest

from metalm_jax.loop import train_and_evaluate


@pytest.mark.slow
def test_train_then_resume(corpus, micro_run, tmp_path):
    """The session's 6-step run (its files), copied and resumed for 3 more steps."""
    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    ckpts = sorted(os.listdir(os.path.join(micro_run, "checkpoints")))
    assert ckpts == ["3", "6", "manifests.json"]
    assert os.path.exists(os.path.join(micro_run, "tokenizer.model"))
    workdir = shutil.copytree(micro_run, tmp_path / "run")

    cfg.train.steps = 9
    second = train_and_evaluate(cfg, str(workdir))  # resumes at 6, trains 3 more
    assert second["step"] == 9
    assert "eval/loss" in second and isinstance(second["sample"], str)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [2, 4, 6, 8, 9]
    assert all(r["perf/tokens_per_s"] > 0 for r in records if "train/loss" in r)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(os.path.join(workdir, "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")][:3] == [2, 4, 6]
    assert "eval/perplexity" in ea.Tags()["scalars"]


@pytest.mark.slow
def test_evaluate_and_generate_on_a_trained_run(corpus, micro_run, tmp_path):
    from metalm_jax.config import completion_eval, kjv_testament_eval, perplexity_eval
    from metalm_jax.eval.evaluators import run_evals
    from metalm_jax.eval.generation import generate_text
    from metalm_jax.eval.load import load_run

    cfg, _ = corpus
    cfg = cfg.copy_and_resolve_references()
    workdir = micro_run  # read only: the evals write under tmp_path

    cfg.evals.perplexity = perplexity_eval(batch_size=4)
    cfg.evals.icl = kjv_testament_eval(
        shots=(0, 1), trials=2, examples=4, max_input_tokens=8, seq_len=64, enc_len=32, batch_size=8
    )
    cfg.evals.completion = completion_eval(examples=4, max_tokens=3, batch_size=4)
    _, tok, trainer, params = load_run(workdir, None, cfg)
    results = run_evals(cfg, str(tmp_path), trainer, params, tok)
    assert 0.0 <= results["completion"]["token_f1"] <= 1.0
    assert results["completion"]["examples"] == 4
    assert 0 < results["perplexity"]["eval/loss"] < 20
    assert results["icl"]["1shot/trials"] == 2 and results["icl"]["0shot/trials"] == 1
    assert 0.0 <= results["icl"]["1shot/accuracy_mean"] <= 1.0
    assert 0.0 <= results["icl"]["1shot/generation_exact_match"] <= 1.0
    preds = [
        json.loads(x) for x in open(os.path.join(tmp_path, "evals", "icl", "predictions.jsonl"))
    ]
    assert len(preds) == 8 and {p["gold"] for p in preds} == {"Old", "New"}
    assert all(isinstance(p["generated"], str) for p in preds)

    texts = generate_text(workdir, ["In the beginning", "And"], max_tokens=5, beam=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        generate_text(str(tmp_path / "empty"), ["x"])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        generate_text(workdir, ["x"], image=str(tmp_path / "nope.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="no vision encoder"):
        generate_text(workdir, ["x"], image=str(bad))
    other = cfg.copy_and_resolve_references()
    other.model.decoder.num_layers = 3
    with pytest.raises(ValueError, match="model.decoder.num_layers: checkpoint 2, config 3"):
        load_run(workdir, None, other)
