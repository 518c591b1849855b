"""Evaluators are built once per run and then run on parameters (eval/evaluators.py): the setup
(opening the task, drawing demonstrations, laying out rows) happens at build_evals, each
Evals.run only runs the model, and every run of the same parameters gives the same figures.

The model is a fake whose next-token distribution is a parameter (`bias`), so a run costs no
compile worth the name, and a change of parameters shows in the scores and the generations."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.config import kjv_testament_eval, perplexity_eval, task_eval
from metalm_jax.data.tasks import registry
from metalm_jax.eval import decode, evaluators
from metalm_jax.eval.evaluators import build_evals
from metalm_jax.model.build import derive
from metalm_jax.types import ConfigError


class BiasLM:
    """Logits = params["bias"] at every position (one static jit argument, as a model is)."""

    def apply(self, variables, batch):
        bias = variables["params"]["bias"]
        return jnp.broadcast_to(bias, (*batch.tokens.shape, bias.shape[0])), {}

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, BiasLM)


class FakeTrainer:
    model = BiasLM()

    def __init__(self, derived):
        self.derived = derived


def _generate(model, params, batch, key, *, max_new, cfg, stop_ids, pad_id):
    """Greedy under BiasLM: the bias's argmax, max_new times, for every row."""
    best = int(np.argmax(np.asarray(params["bias"])))
    return np.full((batch.tokens.shape[0], max_new), best, np.int32)


def _params(tok, seed: int):
    """A random bias over the vocabulary: another seed, other scores and another argmax."""
    rng = np.random.default_rng(seed)
    return {"bias": jnp.asarray(rng.normal(0, 2, tok.vocab_size), jnp.float32)}


@pytest.fixture
def counted(monkeypatch):
    """{what: calls}: the task opener and the KJV item draw, counted; generation faked."""
    calls = {"open_task": 0, "kjv_items": 0}
    open_task, kjv_items = registry.open_task, evaluators.kjv_testament_task

    def counting_open_task(*a, **k):
        calls["open_task"] += 1
        return open_task(*a, **k)

    def counting_kjv_items(*a, **k):
        calls["kjv_items"] += 1
        return kjv_items(*a, **k)

    monkeypatch.setattr(registry, "open_task", counting_open_task)
    monkeypatch.setattr(evaluators, "kjv_testament_task", counting_kjv_items)
    monkeypatch.setattr(decode, "generate", _generate)
    return calls


def _config(corpus):
    base, tok = corpus
    cfg = testing.micro_finetune_config("unused", base.data.tfds_data_dir)
    cfg.evals = {
        "books": task_eval(examples=4, max_tokens=2, batch_size=4),
        "icl": kjv_testament_eval(
            shots=(0, 1), trials=2, examples=4, max_input_tokens=8, seq_len=64, enc_len=32,
            batch_size=8,
        ),
    }  # fmt: skip
    return cfg, tok


def _written(workdir, name) -> tuple:
    d = workdir / "evals" / name
    lines = (d / "predictions.jsonl").read_text().splitlines()
    return json.loads((d / "metrics.json").read_text()), [json.loads(x) for x in lines]


def test_evaluators_are_built_once_and_run_on_parameters(corpus, counted, tmp_path):
    cfg, tok = _config(corpus)
    evals = build_evals(cfg, str(tmp_path), FakeTrainer(derive(cfg, tok)), tok)
    assert evals.names == ["books", "icl"]
    assert counted == {"open_task": 1, "kjv_items": 1}  # all the setup, at build time

    a, b = _params(tok, 0), _params(tok, 1)
    first = evals.run(a)
    written = {name: _written(tmp_path, name) for name in evals.names}
    assert written["books"][0] == first["books"] and len(written["books"][1]) == 4
    assert first["icl"]["1shot/trials"] == 2 and len(written["icl"][1]) == 8
    again = evals.run(a)
    assert counted == {"open_task": 1, "kjv_items": 1}  # nothing opened or drawn again
    assert again == first  # the same prompts and demonstrations: the figures compare
    assert {name: _written(tmp_path, name) for name in evals.names} == written

    evals.run(b)  # the parameters reach the model: other option scores, other generations
    assert counted == {"open_task": 1, "kjv_items": 1}
    (_, books), (_, icl) = _written(tmp_path, "books"), _written(tmp_path, "icl")
    scores = lambda preds: [p["option_scores"] for p in preds]
    assert scores(books) != scores(written["books"][1])
    generated = lambda preds: {p["generated"] for p in preds}
    assert generated(icl) != generated(written["icl"][1])


def test_build_evals_checks_every_name_and_type_before_building_any(corpus, counted, tmp_path):
    cfg, tok = _config(corpus)
    cfg.evals.zz = perplexity_eval()
    cfg.evals.zz.type = "perplexty"
    trainer = FakeTrainer(derive(cfg, tok))
    with pytest.raises(ConfigError, match=r"evals\.zz\.type='perplexty': expected one of \["):
        build_evals(cfg, str(tmp_path), trainer, tok)
    assert counted == {"open_task": 0, "kjv_items": 0}  # `books` came first, and was not built
    with pytest.raises(ConfigError, match=r"\['bokos'\] not in the config's `evals` section"):
        build_evals(cfg, str(tmp_path), trainer, tok, ("bokos",))
    assert build_evals(cfg, str(tmp_path), trainer, tok, ()).names == []  # train.run_evals=()
    assert build_evals(cfg, str(tmp_path), trainer, tok, ["icl"]).names == ["icl"]
    assert counted == {"open_task": 0, "kjv_items": 1}
