"""The four protocol bugs of the claims study (issue 22), each held by a fast test:

1. a pretrained encoder trains only its top two layers, at a BERT-scale LR, in its own config
   and in a finetune from a run that docked it (the source's treatment carries over);
2. every encoder position an input reads was trained: configs/tiny.py's spans cover its table,
   and a finetune (or an in-context prompt) that reaches past the source's spans is an error
   naming the positions and the keys;
3. in-context option scoring by sum, per piece and calibrated against a content-free input:
   calibration removes a constant option bias, the mean differs from the sum on options of
   different piece counts, and the evaluator reports every mode with the cue in its inputs;
4. an input that lists its options keeps them and its cue whole, and a template whose options
   cannot fit is an error naming the task and the template.

No model is compiled: optimizer groups are read from abstract parameters, finetuning configs are
resolved against a faked source checkpoint, and the evaluator runs a fake model."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.config import kjv_testament_eval, load_config_file
from metalm_jax.model.build import abstract_params, model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.training import finetune
from metalm_jax.training.optimizer import group_labels, param_path
from metalm_jax.types import ConfigError
from tests import _needs
from tests.test_evaluators import BiasLM  # logits = params['bias'] everywhere

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _params(cfg) -> dict:
    """The parameter tree of `cfg`'s model as shapes (eval_shape: nothing computed)."""
    boxed = abstract_params(MetaLM(model_config(cfg)))
    return jax.tree.map(lambda x: x.value, boxed, is_leaf=lambda x: hasattr(x, "value"))


def _effective_lr(cfg, params) -> dict[str, float]:
    """{parameter path: peak LR} under cfg.optim (0 for frozen), from the optimizer's groups."""
    mults = [tuple(m) for m in cfg.optim.lr_multipliers]
    labels, _ = group_labels(params, list(cfg.optim.frozen), mults)
    out = {}
    for path, lab in jax.tree_util.tree_leaves_with_path(labels):
        scale = 0.0 if lab == "frozen" else 1.0 if lab == "train" else mults[int(lab[5:])][1]
        out[param_path(path)] = cfg.optim.lr * scale
    return out


def _fake_source(monkeypatch, saved_cfg, params) -> None:
    """prepare_config's view of a source run: `saved_cfg` as its saved config and `params` as
    its parameters, without a checkpoint on disk."""
    from metalm_jax.training import init_from

    monkeypatch.setattr(init_from, "orbax_checkpoint_dir", lambda run, log: "/src/checkpoints/9")
    monkeypatch.setattr(
        init_from, "orbax_config_and_metadata", lambda step, log: (saved_cfg.to_dict(), params)
    )
    monkeypatch.setattr(finetune, "_copy_tokenizer", lambda *a: None)


def _finetune_config(source: str = "/src"):
    return load_config_file(os.path.join(CONFIGS, "finetune_kjv_books.py"), source)


# ---------------------------------------------------------------------------------------------
# 1. a pretrained encoder: lower layers frozen, the top two at a BERT-scale LR


def test_minilm_trains_only_its_top_two_layers_at_a_bert_rate(monkeypatch, tmp_path):
    path = os.path.join(CONFIGS, "tiny_minilm.py")
    _needs.skip_unless_loadable(path)
    cfg = load_config_file(path)
    params = _params(cfg)
    lr = _effective_lr(cfg, params)
    enc = {k: v for k, v in lr.items() if k.startswith("text_encoder/")}
    top = {k: v for k, v in enc.items() if "/layers_4/" in k or "/layers_5/" in k}
    assert top and np.allclose(list(top.values()), 5e-5)  # 2e-3 x 0.025: BERT-scale
    assert set(enc[k] for k in enc if k not in top) == {0.0}  # embeddings, layers 0-3: frozen
    assert {v for k, v in lr.items() if k.startswith(("decoder/", "connector/"))} == {2e-3}

    # a finetune from that run (configs/finetune_kjv_books.py, decoder frozen, lr 1e-3) keeps
    # the treatment: not all six layers at 1e-3
    _fake_source(monkeypatch, cfg, params)
    out = finetune.prepare_config(_finetune_config(), str(tmp_path), lambda line: None)
    assert out.model.text_encoder.num_layers == 6 and out.optim.lr == 1e-3
    lr = _effective_lr(out, params)
    trained = {k: v for k, v in lr.items() if v}
    assert {k.split("/")[0] for k in trained} == {"text_encoder", "connector"}
    assert np.allclose([v for k, v in trained.items() if k.startswith("text_encoder/")], 2.5e-5)
    assert all("/layers_4/" in k or "/layers_5/" in k for k in trained if "text_encoder" in k)
    assert {v for k, v in trained.items() if k.startswith("connector/")} == {1e-3}

    ft = _finetune_config()
    ft.finetune.carry_pretrained = False  # said explicitly: this config's groups only
    out = finetune.prepare_config(ft, str(tmp_path), lambda line: None)
    assert out.optim.lr_multipliers == ()
    assert all("text_encoder" not in p for p in out.optim.frozen)


def test_only_patterns_of_pretrained_modules_carry():
    """The source's patterns for what it trained from scratch (or froze at random) stay
    behind; a pattern that also touches a module trained from scratch stays behind too."""
    cfg = testing.micro_config()
    names = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(_params(cfg))]
    cfg.optim.lr_multipliers = ((r"^text_encoder/", 0.1), (r"^(text_encoder|decoder)/", 0.5))
    assert finetune.pretrained_treatment(cfg, names) == ([], [])  # nothing loaded pretrained
    cfg.init = [dict(format="hf_bert", source="/models/bert")]
    frozen, mults = finetune.pretrained_treatment(cfg, names)
    assert frozen == [r"^text_encoder/stack/layers_0/"] and mults == [(r"^text_encoder/", 0.1)]


# ---------------------------------------------------------------------------------------------
# 2. encoder positions covered


def test_tiny_spans_train_every_encoder_position_finetuning_reads():
    tiny = load_config_file(os.path.join(CONFIGS, "tiny.py"))
    assert finetune.trained_encoder_positions(tiny) == tiny.model.text_encoder.max_len == 64
    ft = _finetune_config()
    assert ft.task.max_input_tokens + int(ft.spans.enc_bos) <= 64
    icl = tiny.evals.kjv_testament
    assert icl.max_input_tokens + 1 <= 64


def test_finetune_past_the_sources_trained_positions_is_an_error(monkeypatch, tmp_path):
    old = load_config_file(os.path.join(CONFIGS, "tiny.py"))
    old.spans.max_len = 32  # the spans of the first study: positions 0-32 trained
    params = _params(old)
    _fake_source(monkeypatch, old, params)
    with pytest.raises(ConfigError) as e:
        finetune.prepare_config(_finetune_config(), str(tmp_path), lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg
    assert "task.max_input_tokens=60 (+ <s>) reaches text-encoder positions 33-60" in msg
    assert "spans.max_len=32" in msg and "allow_untrained_positions" in msg
    ft = _finetune_config()
    ft.task.max_input_tokens = 32  # within the trained rows: fine
    out = finetune.prepare_config(ft, str(tmp_path), lambda line: None)
    assert out.spans.max_len == 32  # the run's saved config says which positions are trained
    assert finetune.trained_encoder_positions(out) == 33
    ft = _finetune_config()
    ft.finetune.allow_untrained_positions = True
    finetune.prepare_config(ft, str(tmp_path), lambda line: None)
    # a mixture entry's own max_input_tokens counts too
    ft = _finetune_config()
    ft.task.max_input_tokens = 32
    ft.task.name = "mixture"
    ft.task.mixture = [dict(name="kjv_books"), dict(name="kjv_testament", max_input_tokens=40)]
    with pytest.raises(ConfigError, match="positions 33-40"):
        finetune.prepare_config(ft, str(tmp_path), lambda line: None)


def test_encoders_whose_table_was_pretrained_or_absent_are_not_limited():
    cfg = testing.micro_config()
    assert finetune.trained_encoder_positions(cfg) == 9  # spans of 8 + <s>
    cfg.init = [dict(format="hf_bert", source="/models/bert")]
    assert finetune.trained_encoder_positions(cfg) is None  # a pretrained table
    cfg.init = []
    cfg.model.text_encoder.enabled = False  # the GPT baseline: inputs are decoder text
    assert finetune.trained_encoder_positions(cfg) is None


def test_image_tasks_are_not_limited_by_the_text_encoders_positions():
    cfg = testing.micro_finetune_config("unused", task="kjv_books")  # 15 + <s> past 9 rows
    with pytest.raises(ConfigError, match="positions 9-15"):
        finetune.check_positions_trained(cfg, 9, "the source run")
    cfg.task.name = "emoji_vqa"  # the image and its question go to the vision encoder
    finetune.check_positions_trained(cfg, 9, "the source run")


def test_in_context_inputs_past_the_trained_positions_are_an_error():
    from metalm_jax.eval.evaluators import _check_icl_positions

    cfg = load_config_file(os.path.join(CONFIGS, "tiny.py"))
    derived = types.SimpleNamespace(rows=types.SimpleNamespace(text_encoder=True))
    ev = cfg.evals.kjv_testament
    _check_icl_positions(ev, cfg, derived, int(ev.max_input_tokens))  # 40 + <s> of 64: fine
    cfg.spans.max_len = 32
    with pytest.raises(ConfigError, match=r"positions 33-40, .*max_input_tokens <= 32"):
        _check_icl_positions(ev, cfg, derived, int(ev.max_input_tokens))


# ---------------------------------------------------------------------------------------------
# 3. in-context scoring: sum, mean, calibrated


def test_calibration_removes_a_constant_option_bias():
    from metalm_jax.eval.scoring import option_scores

    rng = np.random.default_rng(0)
    gold = np.arange(40) % 2  # balanced: "Old" 0, "New" 1
    # the input says which is right by 1 nat; "New" gets +5 nats whatever the input (and the
    # content-free input "N/A" shows that bias, with a little noise of its own)
    logliks = -4.0 + np.eye(2)[gold] + np.array([0.0, 5.0]) + rng.normal(0, 0.1, (40, 2))
    content_free = -4.5 + np.array([0.0, 5.0]) + rng.normal(0, 0.1, (40, 2))
    lengths = np.array([3, 1])  # "Old" 3 pieces, "New" 1
    acc = lambda mode: np.mean(np.argmax(option_scores(mode, logliks, lengths, content_free), 1)
                               == gold)  # fmt: skip
    assert acc("sum") == 0.5  # always "New": the bias decides
    assert acc("calibrated") == 1.0  # the bias cancels, the input decides
    # per piece, the 3-piece option's score is a third of its sum: other rankings
    mean = option_scores("mean", logliks, lengths)
    np.testing.assert_allclose(mean, logliks / [3.0, 1.0])
    tie = np.array([[-3.0, -2.0]])  # summed, the 1-piece option wins; per piece the 3-piece one
    assert np.argmax(option_scores("sum", tie, lengths)) == 1
    assert np.argmax(option_scores("mean", tie, lengths)) == 0
    with pytest.raises(ValueError, match="content-free"):
        option_scores("calibrated", logliks, lengths)


def test_icl_evaluator_reports_every_mode_with_the_cue_in_its_inputs(corpus, monkeypatch):
    from metalm_jax.data.tasks.task_rows import encode_prompt
    from metalm_jax.eval import decode, evaluators, prompts
    from metalm_jax.model.build import derive

    base, tok = corpus
    cfg = testing.micro_finetune_config("unused", base.data.tfds_data_dir)
    ev = kjv_testament_eval(shots=(0, 1), trials=2, examples=4, max_input_tokens=8, seq_len=64,
                            enc_len=32, batch_size=8, demo_labels="flipped")  # fmt: skip
    built = []
    real = prompts.build_icl_row

    def recording(d, q, o, *a):
        built.append((d, q))
        return real(d, q, o, *a)

    monkeypatch.setattr(prompts, "build_icl_row", recording)
    monkeypatch.setattr(decode, "generate", lambda m, p, b, k, **kw: np.zeros(
        (b.tokens.shape[0], kw["max_new"]), np.int32))  # fmt: skip
    trainer = types.SimpleNamespace(model=BiasLM(), derived=derive(cfg, tok))
    evaluate = evaluators.icl_classification(ev, trainer, tok, cfg, trainer.derived)
    cue = encode_prompt(tok, "A:")
    assert all(list(q[-len(cue) :]) == cue and len(q) <= 8 for _, q in built)
    assert all(list(x[-len(cue) :]) == cue for d, _ in built for x, _ in d)
    blank = tok.encode("N/A")[: 8 - len(cue)] + cue
    assert any(list(q) == blank for _, q in built)  # the content-free rows
    bias = np.random.default_rng(0).normal(0, 2, tok.vocab_size)
    metrics, preds = evaluate({"bias": jnp.asarray(bias, jnp.float32)})
    for k in (0, 1):
        for mode in ("calibrated", "mean", "sum"):
            assert 0.0 <= metrics[f"{k}shot/{mode}/accuracy_mean"] <= 1.0
        assert metrics[f"{k}shot/accuracy_mean"] == metrics[f"{k}shot/calibrated/accuracy_mean"]
    assert metrics["1shot/trials"] == 2 and metrics["demo_labels"] == "flipped"
    # a model that ignores its input scores the query like "N/A": calibrated scores all 0
    p = preds[0]
    np.testing.assert_allclose(p["scores"], p["content_free_scores"], atol=1e-4)
    assert set(p["preds"]) == {"calibrated", "mean", "sum"}


def test_flipped_demonstrations_show_the_other_label(corpus, monkeypatch):
    from metalm_jax.eval import evaluators, prompts
    from metalm_jax.model.build import derive

    base, tok = corpus
    cfg = testing.micro_finetune_config("unused", base.data.tfds_data_dir)
    seen = {}
    built = []
    real = prompts.build_icl_row

    def recording(d, q, o, *a):
        built.append(d)
        return real(d, q, o, *a)

    monkeypatch.setattr(prompts, "build_icl_row", recording)
    trainer = types.SimpleNamespace(model=BiasLM(), derived=derive(cfg, tok))
    for labels in ("gold", "flipped"):
        built.clear()
        ev = kjv_testament_eval(shots=(1,), trials=1, examples=4, max_input_tokens=8, seq_len=64,
                                enc_len=32, batch_size=8, demo_labels=labels)  # fmt: skip
        evaluators.icl_classification(ev, trainer, tok, cfg, trainer.derived)
        seen[labels] = [tok.decode(list(d[0][1])) for d in built]
    assert len(seen["gold"]) == len(seen["flipped"]) > 0
    swap = {"Old": "New", "New": "Old"}
    assert seen["flipped"] == [swap[x] for x in seen["gold"]]
    with pytest.raises(ConfigError, match="scoring=\\('median',\\)"):
        ev.scoring = ("median",)
        evaluators.icl_classification(ev, trainer, tok, cfg, trainer.derived)


# ---------------------------------------------------------------------------------------------
# 4. listed options are kept, or the template is an error


def _encoder(tok, **task):
    from metalm_jax.data.tasks.task_rows import ExampleEncoder

    cfg = testing.micro_finetune_config("unused")
    cfg.task.update(task)
    return ExampleEncoder(tok, cfg.task, text_encoder=True)


def test_a_template_whose_options_cannot_fit_is_an_error(corpus):
    from metalm_jax.data.tasks import kjv

    _, tok = corpus
    (ex,) = kjv.kjv_task("kjv_book", "test", template=kjv.KJV_BOOK_OPTIONS_TEMPLATE)[:1]
    enc = _encoder(tok, name="kjv_book", template=kjv.KJV_BOOK_OPTIONS_TEMPLATE,
                   max_input_tokens=60)  # fmt: skip
    with pytest.raises(ConfigError) as e:
        enc.input_pieces(ex)
    msg = str(e.value)
    assert msg.startswith("task kjv_book, task.template 'Which book of the Bible is this verse")
    assert "its 66 listed options and cue take" in msg and "\n" not in msg
    # by index: kjv_books' template 1 names its index and text
    (ex,) = kjv.kjv_task("kjv_books", "test", template=kjv.TEMPLATES["kjv_books"][1])[:1]
    enc = _encoder(tok, name="kjv_books", template_index=1, max_input_tokens=60)
    with pytest.raises(ConfigError, match=r"task kjv_books, task.template_index=1 \('Which part"):
        enc.input_pieces(ex)


def test_listed_options_and_the_cue_survive_the_cut(corpus):
    from metalm_jax.data.tasks import kjv
    from metalm_jax.data.tasks.task_rows import encode_prompt

    _, tok = corpus
    examples = kjv.kjv_task("kjv_testament", "test", template=kjv.TEMPLATES["kjv_testament"][1])
    enc = _encoder(tok, name="kjv_testament", template_index=1, max_input_tokens=30)
    kept = encode_prompt(tok, "Old </s> New </s> TARGET:")
    instruction = encode_prompt(tok, "Is this verse from the Old or the New Testament?")
    for ex in examples[:5]:
        (piece,) = enc.input_pieces(ex)
        ids = list(piece.ids)
        assert len(encode_prompt(tok, ex.inputs[0])) > 30 == len(ids)  # it was cut
        assert ids[-len(kept) :] == kept  # every option and the cue, whole
        assert ids[:4] == instruction[:4]  # the instruction's start stays
    # without listed options the cut is the old one (middle out, the cue's tail kept)
    from metalm_jax.data.tasks.task_rows import cut_middle

    plain = kjv.kjv_task("kjv_testament", "test")[0]
    enc = _encoder(tok, name="kjv_testament", max_input_tokens=12)
    (piece,) = enc.input_pieces(plain)
    assert list(piece.ids) == cut_middle(encode_prompt(tok, plain.inputs[0]), 12)
