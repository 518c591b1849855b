"""Vision-language: ViT patches, slot layout, masks, the VL loss mask, mixed batches, bad images."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.data.feed import vl_pipeline
from metalm_jax.data.images import ImageError
from metalm_jax.data.pretrain.vl_rows import build_vl_row
from metalm_jax.data.rows import ImageLayout, empty_image_fields
from metalm_jax.data.spans import SpanConfig
from metalm_jax.data.tokenizer import BOS_ID, EOS_ID
from metalm_jax.model.build import image_layout, model_config
from metalm_jax.model.metalm import MetaLM, gather_slots
from metalm_jax.model.vision import interpolate_positions, patchify
from metalm_jax.training.optimizer import make_optimizer
from metalm_jax.training.step import TrainState, train_step
from metalm_jax.types import Batch

LAYOUT = ImageLayout(
    seq_len=32,
    images_per_row=2,
    image_slots=4,
    prefix_len=2,
    text_bank=10,
    image_size=16,
    enc_length=10,
)


def test_patchify_is_row_major():
    img = np.zeros((1, 16, 24, 3), np.float32)
    for r in range(2):
        for c in range(3):
            img[0, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = r * 3 + c
    patches = np.asarray(patchify(jnp.asarray(img), 8))
    assert patches.shape == (1, 6, 8 * 8 * 3)
    np.testing.assert_array_equal(patches[0, :, 0], np.arange(6))
    assert np.all(patches[0] == np.arange(6)[:, None])


def test_position_interpolation_keeps_extra_rows_and_resizes_grid():
    table = jnp.arange(5 * 2, dtype=jnp.float32).reshape(5, 2)  # 1 class row + 2x2 grid
    out = interpolate_positions(table, 2, 4, extra=1)
    assert out.shape == (17, 2)
    np.testing.assert_array_equal(out[0], table[0])


def test_vl_row_worked_example_and_loss_mask():
    image = np.ones((16, 16, 3), np.uint8)
    caption = np.array([11, 12, 13, 14, EOS_ID], np.int32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = build_vl_row([(image, caption)], rng, LAYOUT)
        k = int(row["vl_prefix_mask"][0].sum())
        assert 0 <= k <= 2
        S, n = 4, 5
        assert row["tokens"][0] == BOS_ID
        np.testing.assert_array_equal(row["slot_index"][1 : 1 + S], 10 + np.arange(S))
        np.testing.assert_array_equal(row["slot_index"][1 + S : 1 + S + k], 10 + S + np.arange(k))
        assert np.all(row["slot_index"][1 + S + k :] == -1)
        np.testing.assert_array_equal(row["vl_prefix"][0, :k], caption[:k])
        w = row["loss_weights"]
        # exactly the caption tokens after the prefix are targets, each once, in order
        np.testing.assert_array_equal(row["targets"][w > 0], caption[k:])
        assert np.where(w > 0)[0][0] == S + k  # the last slot predicts caption[k]
        assert row["segment_ids"][: 1 + S + n].tolist() == [1] * (1 + S + n)


def test_second_image_slots_point_at_its_bank_entries():
    rows = testing.random_vl_rows(LAYOUT, 1, 100)
    row = rows[0]
    assert row["image_valid"].tolist() == [1, 1]
    for i in range(2):
        seg = row["segment_ids"] == i + 1
        k = int(row["vl_prefix_mask"][i].sum())
        got = sorted(row["slot_index"][seg & (row["slot_index"] >= 0)].tolist())
        base = 10 + i * (4 + 2)
        assert got == list(range(base, base + 4 + k))


def test_gather_writes_every_image_slot_from_the_bank():
    rows = testing.random_vl_rows(LAYOUT, 2, 100, seed=1)
    slot = jnp.asarray(np.stack([r["slot_index"] for r in rows]))
    M = 10 + 2 * 6
    bank = jnp.broadcast_to(jnp.arange(M, dtype=jnp.float32)[None, :, None], (2, M, 3))
    emb = jnp.full((2, 32, 3), jnp.nan)  # poison: an unwritten slot stays NaN
    out = np.asarray(gather_slots(emb, bank, slot))
    s = np.asarray(slot)
    assert np.all(out[s >= 0][:, 0] == s[s >= 0])
    assert np.all(np.isnan(out[s < 0]))


@pytest.fixture(scope="module")
def micro_vl():
    cfg = testing.micro_vl_config()
    layout = image_layout(cfg)
    spans = SpanConfig(4, 8, 0.25, cfg.spans.enc_length)
    text = testing.random_batch(2, 64, cfg.data.vocab_size, spans)
    text.update(empty_image_fields(layout, 2))
    rows = testing.random_vl_rows(layout, 2, cfg.data.vocab_size)
    vl = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch = Batch.from_dict({k: np.concatenate([text[k], vl[k]]) for k in vl})
    batch.validate()
    return cfg, layout, batch


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
def test_bank_layout_and_image_prefix_mask(micro_vl):
    cfg, layout, batch = micro_vl
    model = MetaLM(model_config(cfg))
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    enc = jax.jit(lambda p, b: model.apply({"params": p}, b, method=MetaLM.encode))
    bank = np.asarray(enc(params, batch))
    assert bank.shape == (4, cfg.spans.enc_length + 2 * layout.slots_per_image, 32)
    # a padding prefix position never influences the image or the real prefix outputs
    img = 0  # of an image row (rows 2 and 3) whose first image's prefix has padding
    row = next(r for r in (2, 3) if batch.vl_prefix_mask[r, img].sum() < layout.prefix_len)
    k = int(batch.vl_prefix_mask[row, img].sum())
    assert k < layout.prefix_len
    prefix = batch.vl_prefix.copy()
    prefix[row, img, k] = 77
    out = np.asarray(enc(params, batch.replace(vl_prefix=prefix)))
    # the image's padding prefix outputs (garbage: a padding query averages every value, and
    # no slot_index ever points at one) are the only ones that may change
    pad = cfg.spans.enc_length + layout.image_slots
    keep = np.ones(bank.shape[:2], bool)
    keep[row, pad + k : pad + layout.prefix_len] = False
    np.testing.assert_allclose(out[keep], bank[keep], atol=1e-5)
    # while an image pixel changes the image's outputs (and not the other image's)
    images = batch.images.copy()
    images[row, img] ^= 1  # every pixel value of that image moves by one
    out = np.asarray(enc(params, batch.replace(images=images)))
    base = cfg.spans.enc_length
    S = layout.slots_per_image
    assert (
        np.abs(out[row, base : base + layout.image_slots] - bank[row, base : base + 4]).max() > 1e-4
    )
    np.testing.assert_allclose(out[row, base + S :], bank[row, base + S :], atol=1e-5)


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_mixed_text_and_image_batch_trains(micro_vl):
    cfg, _, batch = micro_vl
    cfg.train.steps = 100
    model = MetaLM(model_config(cfg))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps, params)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, seed=0))
    losses = []
    for _ in range(10):
        state, m = step(state, batch)
        losses.append(float(m["loss_sum"] / m["weight"]))
    assert losses[-1] < losses[0] - 0.3, losses
    before = params["vision_encoder"]["patch_embed"]
    assert not np.allclose(before, state.params["vision_encoder"]["patch_embed"])


def test_bad_image_is_named_or_skipped_and_counted():
    cfg = testing.micro_vl_config()
    layout = image_layout(cfg)

    class Tok:
        eos = EOS_ID

        def encode(self, text):
            return [5, 6]

    fn = vl_pipeline._pair_fn(cfg, Tok(), layout)
    good = {"id": b"ok", "image": np.zeros((20, 20, 3), np.uint8), "caption": b"a"}
    bad = {"id": b"emoji-42", "image": b"\x89PNG\r\n\x1a\n garbage", "caption": b"b"}
    image, caption = fn(good, np.random.default_rng(0))
    assert image.shape == (16, 16, 3) and caption.tolist() == [5, 6, EOS_ID]
    with pytest.raises(ImageError, match="emoji-42"):
        fn(bad, np.random.default_rng(0))
    cfg.images.skip_bad_images = True
    fn = vl_pipeline._pair_fn(cfg, Tok(), layout)
    before = vl_pipeline.skipped_images()
    assert fn(bad, np.random.default_rng(0)) is None
    assert vl_pipeline.skipped_images() == before + 1


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
def test_vision_encoder_runs_at_a_new_resolution():
    from metalm_jax.model.vision import VisionEncoder

    cfg = model_config(testing.micro_vl_config()).vision  # 16 px, patch 8: 2x2 grid
    enc = VisionEncoder(cfg)
    img16 = jnp.ones((1, 16, 16, 3))
    prefix = jnp.zeros((1, cfg.text_prefix), jnp.int32)
    valid = jnp.ones((1,), jnp.int32)
    params = enc.init(jax.random.key(0), img16, valid, prefix, prefix)
    out = enc.apply(params, jnp.ones((1, 24, 24, 3)), valid, prefix, prefix)  # 3x3 grid
    assert out.shape == (1, 9 + cfg.text_prefix, cfg.stack.d_model)
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_vqa_evaluator_on_a_tiny_jsonl(corpus, tmp_path):
    import json

    import PIL.Image

    from metalm_jax.config import vqa_eval
    from metalm_jax.eval.evaluators import run_evals
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer

    _, tok = corpus
    rows = []
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        PIL.Image.new("RGB", (20, 20), color).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "question": "what color?", "answers": ["red"] * 10})
    (tmp_path / "vqa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    cfg = testing.micro_vl_config()
    cfg.evals.toy_vqa = vqa_eval(
        str(tmp_path / "vqa.jsonl"),
        train_file=str(tmp_path / "train.jsonl"),  # demonstrations from a training split
        shots=(0, 1),
        seq_len=64,
        batch_size=4,
        max_tokens=3,
    )
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        params = trainer.init(jax.random.key(0)).params
    results = run_evals(cfg, str(tmp_path), trainer, params, tok)
    m = results["toy_vqa"]
    assert m["examples"] == 4 and 0.0 <= m["1shot/vqa_accuracy"] <= 1.0
    preds = (tmp_path / "evals" / "toy_vqa" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 8
    (tmp_path / "bad.jsonl").write_text(
        '{"image": "missing.png", "question": "q", "answers": []}\n'
    )
    cfg.evals.toy_vqa.file = str(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="bad.jsonl:1: expected"):
        run_evals(cfg, str(tmp_path), trainer, params, tok)
