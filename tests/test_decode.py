"""KV-cache decoding: prefill + extension equals the full forward, samplers, beam search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig, build_example
from metalm_jax.eval import decode
from metalm_jax.model.build import model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.types import Batch

# the full tier: its micro fixture compiles the decoder (10 s), each test 3-9 s more
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro():
    cfg = testing.micro_config()
    model = MetaLM(model_config(cfg))
    row = testing.random_rows(1, 64, cfg.data.vocab_size, seed=3, docs_per_row=2)[0]
    row["segment_ids"][:] = 1  # one document
    row["positions"][:] = np.arange(64)
    ex = build_example(row, [(5, 12), (20, 28)], SpanConfig(4, 8, 0.25, 24))
    batch = Batch.from_dict({k: v[None] for k, v in ex.items()})
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    return cfg, model, params, batch


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("with_slots", [True, False])
def test_prefill_and_extension_reproduce_the_full_forward(micro, with_slots):
    _, model, params, batch = micro
    if not with_slots:
        batch = batch.replace(slot_index=np.full_like(batch.slot_index, -1))
    full = np.asarray(model.apply({"params": params}, batch)[0])
    P = 40
    prompt = jax.tree.map(lambda x: x[:, :P] if x.shape[1] == 64 else x, batch)
    cache = decode.init_cache(model, prompt, 64)
    logits, cache = decode._apply(model, params, cache, prompt, True)
    got = [np.asarray(logits)]
    for t in range(P, 64):
        step = decode._step_batch(
            prompt, jnp.asarray(batch.tokens[:, t]), jnp.asarray(batch.positions[:, t])
        )
        logits, cache = decode._apply(model, params, cache, step, False)
        got.append(np.asarray(logits))
    assert _rel(np.concatenate(got, axis=1), full) <= 1e-5


def test_top_k_and_top_p_stay_in_the_allowed_set():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.1, 0.06, 0.04]] * 4))
    keys = jax.random.split(jax.random.key(0), 200)
    k2 = np.asarray(
        jax.vmap(lambda k: decode.sample(logits, k, decode.SamplingConfig(1.0, 2)))(keys)
    )
    assert set(np.unique(k2)) <= {0, 1} and len(np.unique(k2)) == 2
    p = np.asarray(
        jax.vmap(lambda k: decode.sample(logits, k, decode.SamplingConfig(1.0, 0, 0.85)))(keys)
    )
    assert set(np.unique(p)) <= {0, 1, 2}  # 0.5 + 0.3 < 0.85, so token 2 is needed
    assert set(np.unique(p)) == {0, 1, 2}
    greedy = decode.sample(logits, keys[0], decode.SamplingConfig())
    assert np.all(np.asarray(greedy) == 0)


def _prompts(cfg, lengths, seed=0):
    rng = np.random.default_rng(seed)
    ids = [[1] + rng.integers(5, cfg.data.vocab_size, n - 1).tolist() for n in lengths]
    grid = decode.left_pad_prompts(ids)
    from metalm_jax.model.build import dummy_batch

    B, P = grid["tokens"].shape
    return dummy_batch(B, P, 8).replace(**grid), ids


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_batched_prompts_of_different_lengths_match_one_by_one(micro):
    cfg, model, params, _ = micro
    batch, ids = _prompts(cfg, [5, 9, 3])
    sc = decode.SamplingConfig()
    together = np.asarray(
        decode.generate(model, params, batch, jax.random.key(0), max_new=6, cfg=sc)
    )
    for b, p in enumerate(ids):
        alone, _ = _prompts(cfg, [len(p)])
        alone = alone.replace(tokens=np.asarray([p], np.int32))
        one = np.asarray(
            decode.generate(model, params, alone, jax.random.key(0), max_new=6, cfg=sc)
        )
        np.testing.assert_array_equal(together[b], one[0])


def test_greedy_equals_beam_of_one_and_stop_tokens_pad(micro):
    cfg, model, params, _ = micro
    batch, _ = _prompts(cfg, [4, 7])
    greedy = np.asarray(
        decode.generate(
            model, params, batch, jax.random.key(0), max_new=8, cfg=decode.SamplingConfig()
        )
    )
    beam1 = np.asarray(
        jax.jit(
            lambda p, b: decode._beam_search(
                model, p, b, max_new=8, cfg=decode.SamplingConfig(beam=1), stop_ids=()
            )
        )(params, batch)
    )
    np.testing.assert_array_equal(greedy, beam1)
    stop = int(greedy[0, 2])
    stopped = np.asarray(
        decode.generate(
            model,
            params,
            batch,
            jax.random.key(0),
            max_new=8,
            cfg=decode.SamplingConfig(),
            stop_ids=(stop,),
        )
    )
    first = int(np.argmax(greedy[0] == stop))
    np.testing.assert_array_equal(stopped[0, : first + 1], greedy[0, : first + 1])
    assert np.all(stopped[0, first + 1 :] == 0)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_beam_search_scores_at_least_greedy(micro):
    cfg, model, params, _ = micro
    batch, _ = _prompts(cfg, [6])
    full = lambda toks: model.apply(
        {"params": params},
        batch.replace(
            tokens=np.concatenate([batch.tokens, toks[None, :-1]], 1),
            segment_ids=np.ones((1, 6 + toks.shape[0] - 1), np.int32),
            positions=np.arange(6 + toks.shape[0] - 1, dtype=np.int32)[None],
            slot_index=-np.ones((1, 6 + toks.shape[0] - 1), np.int32),
            targets=np.zeros((1, 6 + toks.shape[0] - 1), np.int32),
            loss_weights=np.zeros((1, 6 + toks.shape[0] - 1), np.float32),
        ),
    )[0]

    def logprob(toks):
        lp = jax.nn.log_softmax(full(toks)[0, 5:], axis=-1)
        return float(jnp.sum(lp[jnp.arange(toks.shape[0]), toks]))

    sc = decode.SamplingConfig(beam=4, length_penalty=0.0)
    beam = np.asarray(decode.generate(model, params, batch, jax.random.key(0), max_new=5, cfg=sc))
    greedy = np.asarray(
        decode.generate(
            model, params, batch, jax.random.key(0), max_new=5, cfg=decode.SamplingConfig()
        )
    )
    assert logprob(beam[0]) >= logprob(greedy[0]) - 1e-4
