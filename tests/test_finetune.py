"""Finetuning from a pretraining run: presets, params-only restore, frozen groups unchanged,
task evaluation, and the frozen-random-encoder error."""

import os

import jax
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.config import task_eval
from metalm_jax.training.finetune import PRESETS, check_frozen_loaded, prepare_config


@pytest.fixture(scope="module")
def pretrained(micro_run):
    """A 6-step micro pretraining run (its workdir: the session's shared run, read-only)."""
    return micro_run


def _params(workdir):
    from metalm_jax.eval.load import load_run

    _, _, _, params = load_run(workdir)
    return jax.tree.map(np.asarray, params)


@pytest.mark.slow
def test_decoder_frozen_finetune_leaves_decoder_bitwise_and_evaluates(pretrained, corpus, tmp_path):
    from metalm_jax.loop import train_and_evaluate

    cfg = testing.micro_finetune_config(pretrained)
    cfg.evals = {"books": task_eval(examples=8, max_tokens=3, batch_size=8)}
    cfg.train.run_evals = ("books",)
    work = str(tmp_path / "ft")
    out = train_and_evaluate(cfg, work)
    assert np.isfinite(out["eval/loss"])
    assert 0.0 <= out["evals/books/generation_accuracy"] <= 1.0
    assert 0.0 <= out["evals/books/scoring_accuracy"] <= 1.0
    before, after = _params(pretrained), _params(work)
    for name in ("embed", "decoder"):  # frozen: bitwise identical to the pretrained run
        for a, b in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True):
            np.testing.assert_array_equal(a, b)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(before["text_encoder"]), jax.tree.leaves(after["text_encoder"]),
            strict=True,
        )
    ]  # fmt: skip
    assert all(changed)  # the encoder trained (restored, then updated)
    preds = open(os.path.join(work, "evals", "books", "predictions.jsonl")).read().splitlines()
    assert len(preds) == 8 and '"option_scores"' in preds[0]
    # the finetuned run is evaluated by the ordinary CLI path with its own saved config
    from metalm_jax.eval.evaluators import run_evals
    from metalm_jax.eval.load import load_run

    saved, tok, inference, params = load_run(work)
    assert saved.task.name == "kjv_books" and saved.finetune.from_run == pretrained
    res = run_evals(cfg, work, inference, params, tok)
    assert res["books"]["examples"] == 8
    # and under the pretraining config, whose optimizer state has another structure (nothing
    # frozen but one encoder layer) and whose encoder grid differs: only parameters are read
    from metalm_jax.config import perplexity_eval

    pre, _ = corpus
    pre = pre.copy_and_resolve_references()
    pre.evals = {"ppl": perplexity_eval(batch_size=4)}
    assert list(pre.optim.frozen) != list(saved.optim.frozen)
    assert pre.spans.enc_length != saved.spans.enc_length
    got_cfg, tok, inference, same = load_run(work, None, pre)
    assert got_cfg.optim.frozen == pre.optim.frozen
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    res = run_evals(pre, work, inference, same, tok)
    assert np.isfinite(res["ppl"]["eval/loss"])


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_prepare_config_takes_model_tokenizer_and_restores(pretrained, tmp_path):
    cfg = testing.micro_finetune_config(pretrained)
    with cfg.unlocked():
        cfg.model.decoder.num_layers = 7  # replaced by the source run's model
    lines = []
    out = prepare_config(cfg, str(tmp_path / "ft"), lines.append)
    assert out.model.decoder.num_layers == 2
    assert os.path.isfile(tmp_path / "ft" / "tokenizer.model")
    assert sorted(e["target"] for e in out.init) == [
        "connector",
        "decoder",
        "embed",
        "text_encoder",
    ]
    assert PRESETS["decoder_frozen"][0] in out.optim.frozen
    assert "restoring" in lines[0]
    cfg.finetune.restore = ("decoder", "vision_encoder")
    with pytest.raises(ValueError, match=r"no params/\['vision_encoder'\]"):
        prepare_config(cfg, str(tmp_path / "ft2"), lines.append)
    cfg.finetune.restore = ("all",)
    cfg.finetune.preset = "frozen_everything"
    with pytest.raises(ValueError, match="finetune.preset='frozen_everything'"):
        prepare_config(cfg, str(tmp_path / "ft3"), lines.append)


@pytest.mark.parametrize(
    "preset,trained",
    [
        ("decoder_frozen", {"connector", "text_encoder"}),
        ("full", {"connector", "text_encoder", "decoder", "embed"}),
        ("connector_only", {"connector"}),
        ("decoder_only", {"decoder", "embed"}),
    ],
)
def test_presets_choose_parameter_groups(preset, trained):
    from metalm_jax.model.build import abstract_params, model_config
    from metalm_jax.model.metalm import MetaLM
    from metalm_jax.training.optimizer import group_labels

    cfg = testing.micro_config()
    params = jax.tree.map(lambda x: x.value, abstract_params(MetaLM(model_config(cfg))),
                          is_leaf=lambda x: hasattr(x, "value"))  # fmt: skip
    if PRESETS[preset]:
        labels, _ = group_labels(params, PRESETS[preset], ())
    else:
        labels = jax.tree.map(lambda _: "train", params)
    got = {k for k, v in labels.items() if "train" in jax.tree.leaves(v)}
    frozen_all = {k for k, v in labels.items() if set(jax.tree.leaves(v)) == {"frozen"}}
    assert got == trained and frozen_all == set(labels) - trained


def test_frozen_random_encoder_is_an_error():
    from metalm_jax.model.build import abstract_params, model_config
    from metalm_jax.model.metalm import MetaLM

    cfg = testing.micro_config()
    cfg.optim.allow_frozen_random = False
    params = abstract_params(MetaLM(model_config(cfg)))
    with pytest.raises(ValueError, match=r"text_encoder/stack/layers_0/.*allow_frozen_random"):
        check_frozen_loaded(cfg, params)
    cfg.init = [dict(format="hf_bert", source="/models/bert")]  # an init entry loads it: fine
    check_frozen_loaded(cfg, params)
    cfg.init = []
    cfg.optim.allow_frozen_random = True  # said explicitly: fine
    check_frozen_loaded(cfg, params)


@pytest.mark.slow
def test_emoji_vqa_finetune_from_a_vl_run(corpus, tmp_path):
    """Image tasks end to end: a micro VL run, finetuned on emoji VQA (images + questions in
    the VL encoder's prefix), evaluated by VQA accuracy."""
    from metalm_jax.loop import train_and_evaluate

    base, _ = corpus
    pre = testing.micro_vl_config(list(base.data.files), base.data.tfds_data_dir)
    pre.model.vision.text_prefix = 12
    pre.train.steps, pre.train.sample_tokens = 2, 0  # no sample: one generate compile less
    pre.train.eval_every, pre.train.checkpoint_every = 0, 2  # no eval: not what is tested
    src = str(tmp_path / "vl")
    train_and_evaluate(pre, src)
    cfg = testing.micro_finetune_config(src, base.data.tfds_data_dir, task="emoji_vqa")
    cfg.images.images_per_row = 2
    cfg.task.eval_examples = 4
    cfg.evals = {"vqa": task_eval(examples=4, max_tokens=3, batch_size=4)}
    cfg.train.run_evals = ("vqa",)
    out = train_and_evaluate(cfg, str(tmp_path / "ft"))
    assert 0.0 <= out["evals/vqa/vqa_accuracy"] <= 1.0 and np.isfinite(out["eval/loss"])


@pytest.mark.slow
def test_cli_finetunes_on_a_users_jsonl_and_evaluates(pretrained, corpus, tmp_path):
    """README's own-task commands through the real CLIs: a templated JSONL with a verbalized
    label field, then `evaluate` with the same config."""
    import json
    import subprocess
    import sys

    cfg, _ = corpus
    for split, n in (("train", 24), ("val", 6)):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"verse": f"and God said {i}", "label": i % 2}) + "\n")
    conf = f"tests/micro_finetune_config.py:{pretrained},{cfg.data.tfds_data_dir}"
    work = str(tmp_path / "run")
    args = [
        f"--config={conf}",
        "--config.task.name=jsonl",
        f"--config.task.file={tmp_path / 'train.jsonl'}",
        f"--config.task.validation_file={tmp_path / 'val.jsonl'}",
        "--config.task.input_template={verse} </s> Old or New? Answer:",
        "--config.task.label_field=label",
        '--config.task.verbalizer=("Old","New")',
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = lambda *a: subprocess.run(
        [sys.executable, *a], capture_output=True, text=True, env=env, timeout=600
    )
    out = run("-m", "metalm_jax.train", *args, f"--workdir={work}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finetuning from" in out.stdout and "task: " in out.stdout
    out = run("-m", "metalm_jax.evaluate", *args, f"--workdir={work}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"scoring_accuracy"' in out.stdout
    preds = open(os.path.join(work, "evals", "task", "predictions.jsonl")).read().splitlines()
    assert len(preds) == 6


def test_mixture_entries_caps_and_sampling(corpus):
    """A mixture's entries lay their keys over the task section; caps give fixed subsets;
    rows pack examples of both tasks."""
    from metalm_jax.data.feed import pipeline
    from metalm_jax.data.tasks.mixture import capped_source, entries
    from metalm_jax.model.build import derive

    cfg, tok = corpus
    cfg = testing.micro_finetune_config("unused", cfg.data.tfds_data_dir)
    cfg.task.name = "mixture"
    # template 2 lists no options: the micro encoder's 15 input tokens hold no listed options
    cfg.task.mixture = [dict(name="kjv_books"), dict(name="kjv_testament", template_index=2)]
    got = entries(cfg.task)
    assert [t.name for t in got] == ["kjv_books", "kjv_testament"]
    assert got[1].template_index == 2 and got[0].template_index == 0
    a = capped_source(got[0], "train", None, 64, seed=3, cap=50)
    b = capped_source(got[0], "train", None, 64, seed=3, cap=50)
    assert len(a) == 50 and [a[i].id for i in range(50)] == [b[i].id for i in range(50)]
    cfg.task.cap = 200
    batch = next(pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows))
    assert batch["segment_ids"].max() >= 2
    text = " ".join(tok.decode(r[r > 4]) for r in batch["targets"])
    assert any(w in text for w in ("Old", "New")) or any(
        w in text for w in ("Law", "History", "Wisdom", "Gospels", "Prophets")
    )
    cfg.task.mixture = [dict(name="kjv_books", tempalte_index=2)]
    with pytest.raises(ValueError, match=r"task.mixture\[0\] \(kjv_books\): unknown keys"):
        entries(cfg.task)


@pytest.mark.slow
def test_multitask_finetune_and_cluster_table(pretrained, tmp_path):
    from metalm_jax.config import multitask_eval
    from metalm_jax.loop import train_and_evaluate

    cfg = testing.micro_finetune_config(pretrained)
    cfg.task.name = "mixture"
    # the micro encoder's 15 input tokens hold no listed options (an error, not a silent cut:
    # data/tasks/task_rows.py), so the drawn templates are kjv_completion's, which list none
    cfg.task.mixture = [dict(name="kjv_books", template_index=0), dict(name="kjv_completion")]
    cfg.task.template_index = -1  # instruction tuning: one template per example
    cfg.evals = {"mt": multitask_eval(examples=4, templates=1, max_tokens=3, batch_size=8)}
    cfg.train.run_evals = ("mt",)
    out = train_and_evaluate(cfg, str(tmp_path / "mt"))
    for key in (
        "evals/mt/kjv_books/generation_accuracy",
        "evals/mt/kjv_completion/token_f1_best",
        "evals/mt/cluster/topic",
        "evals/mt/cluster/completion",
        "evals/mt/average",
    ):
        assert 0.0 <= out[key] <= 1.0, key
    import json

    m = json.load(open(tmp_path / "mt" / "evals" / "mt" / "metrics.json"))
    assert "| topic | kjv_books | generation_accuracy |" in m["table"]
