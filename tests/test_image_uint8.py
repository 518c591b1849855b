"""Images travel as uint8 and are normalized on the device (issue 21, item 4).

Every producer of image rows emits uint8 pixels; the vision encoder applies the normalization
the host used to apply (x / 255 - mean) / std, in float32, and the model's output on uint8
pixels equals its output on the host-normalized float32 pixels of before.
"""

import io
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from metalm_jax import testing
from metalm_jax.data import images
from metalm_jax.data.feed import vl_pipeline
from metalm_jax.data.pretrain.vl_rows import build_vl_row
from metalm_jax.data.rows import Image, RowBuilder, Target, empty_image_fields
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS
from metalm_jax.model.build import abstract_params, dummy_batch, image_layout, model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.model.vision import normalize_pixels
from metalm_jax.types import FIELD_DTYPES, Batch

VIT_PIXELS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # a converted ViT's images.mean / images.std


def _old_host_normalization(pixels: np.ndarray, mean, std) -> np.ndarray:
    """What data/images.preprocess returned before pixels travelled as uint8 (reference)."""
    x = np.asarray(pixels, dtype=np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


class _Tok:
    ids = SENTENCEPIECE_IDS
    eos = SENTENCEPIECE_IDS.eos

    def encode(self, text):
        return [5 + len(w) for w in text.split()]


def _png(pixels) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def vl():
    cfg = testing.micro_vl_config()
    return cfg, image_layout(cfg)


def test_every_producer_of_image_rows_emits_uint8(vl, tmp_path):
    cfg, layout = vl
    side = layout.image_size
    raw = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert FIELD_DTYPES["images"] == np.uint8
    # the preprocessing itself: resized and cropped as before, the values left as they are
    solid = images.preprocess(PIL.Image.new("RGB", (40, 30), (7, 200, 255)), side, record_id="s")
    assert solid.dtype == np.uint8 and np.all(solid == [7, 200, 255])
    want = images.preprocess(raw, side, record_id="r")
    assert want.shape == (side, side, 3) and want.dtype == np.uint8
    # pretraining pairs (vl_pipeline) -> rows (pretrain/vl_rows.py)
    pair = vl_pipeline._pair_fn(cfg, _Tok(), layout)(
        {"id": b"r", "image": _png(raw), "caption": b"a red square"}, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(pair[0], want)
    row = build_vl_row([pair], np.random.default_rng(0), layout)
    assert row["images"].dtype == np.uint8
    np.testing.assert_array_equal(row["images"][0], want)
    # task rows (emoji VQA's ImageInput) through the task encoder
    from metalm_jax.data.tasks.examples import ImageInput, TaskExample
    from metalm_jax.data.tasks.task_rows import ExampleEncoder

    ex = TaskExample("e", (ImageInput(raw, "what is it?", "e"),), "a square")
    pieces = ExampleEncoder(_Tok(), cfg.task, text_encoder=True, layout=layout).pieces(ex)
    assert isinstance(pieces[0], Image) and pieces[0].pixels.dtype == np.uint8
    np.testing.assert_array_equal(pieces[0].pixels, want)
    # a VQA evaluator's JSONL file (the captioning evaluator and the caption / generate
    # commands read their images through the same preprocess)
    from metalm_jax.eval.evaluators import _vqa_file

    (tmp_path / "r.png").write_bytes(_png(raw))
    (tmp_path / "v.jsonl").write_text(
        json.dumps({"image": "r.png", "question": "q", "answers": ["a"]}) + "\n"
    )
    ((_, pixels, _, _),) = _vqa_file(str(tmp_path / "v.jsonl"), layout)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, want)
    # rows without images, the testing helpers and the abstract (AOT) batch
    assert empty_image_fields(layout, 2)["images"].dtype == np.uint8
    assert testing.random_vl_rows(layout, 1, 50)[0]["images"].dtype == np.uint8
    assert dummy_batch(2, 8, 4, layout).images.dtype == np.uint8
    # and float pixels are refused, not cast: by the row builder and the Batch contract
    builder = RowBuilder(layout.seq_len, layout.enc_length, layout=layout)
    floats = _old_host_normalization(want, images.CLIP_MEAN, images.CLIP_STD)
    with pytest.raises(ValueError, match=r"must be uint8\[16, 16, 3\] pixels .* got float32"):
        builder.add([Image(floats, [5]), Target([6, 2])])
    batch = Batch.from_dict({k: v[None] for k, v in row.items()})
    batch.validate(layout.bank)
    with pytest.raises(ValueError, match="Batch.images: expected dtype uint8, got float32"):
        batch.replace(images=batch.images.astype(np.float32)).validate(layout.bank)


@pytest.mark.parametrize("pixels", [images.CLIP_MEAN + images.CLIP_STD, VIT_PIXELS[0] * 2])
def test_device_normalization_is_the_old_host_formula(pixels):
    mean, std = pixels[:3], pixels[3:]
    # every uint8 value in every channel, in a batch of two images
    levels = np.arange(256, dtype=np.uint8)
    grid = np.stack([levels, levels[::-1], np.roll(levels, 100)], -1).reshape(2, 8, 16, 3)
    got = jax.jit(normalize_pixels, static_argnums=(1, 2))(jnp.asarray(grid), mean, std)
    assert got.dtype == jnp.float32 and got.shape == grid.shape
    want = _old_host_normalization(grid, mean, std)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="expected uint8 pixels, got int32"):
        normalize_pixels(jnp.asarray(grid, jnp.int32), mean, std)


def test_forward_on_uint8_equals_forward_on_host_normalized_pixels(vl):
    """The micro VL model: logits from a uint8 batch equal those from the same batch with the
    old host-normalized float32 pixels (which the encoder takes as normalized). A converted
    ViT's images.mean / images.std, so the test also shows the config reaches the encoder."""
    cfg, _ = vl
    assert model_config(cfg).vision.pixel_mean == images.CLIP_MEAN  # the default
    cfg = cfg.copy_and_resolve_references()
    cfg.images.mean, cfg.images.std = VIT_PIXELS
    # smaller still, to compile in a second or two: 1 decoder layer, no text encoder
    cfg.data.seq_len, cfg.model.decoder.num_layers, cfg.model.text_encoder.enabled = 32, 1, False
    mc, layout = model_config(cfg), image_layout(cfg)
    mean, std = mc.vision.pixel_mean, mc.vision.pixel_std
    assert (mean, std) == VIT_PIXELS
    rows = testing.random_vl_rows(layout, 1, cfg.data.vocab_size)
    batch = Batch.from_dict({k: np.stack([r[k] for r in rows]) for k in rows[0]})
    assert batch.images.dtype == np.uint8
    model = MetaLM(mc)
    # random values of the parameters' shapes: no init program to compile
    rng = np.random.default_rng(1)
    shapes = nn.unbox(abstract_params(model))
    params = jax.tree.map(lambda x: rng.normal(0, 0.2, x.shape).astype(np.float32), shapes)
    forward = jax.jit(lambda b: model.apply({"params": params}, b)[0])
    got = np.asarray(forward(batch))
    old = _old_host_normalization(batch.images, mean, std)
    want = np.asarray(forward(batch.replace(images=old)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # not vacuous: the same pixels unnormalized give other logits
    raw = np.asarray(forward(batch.replace(images=batch.images.astype(np.float32))))
    assert np.abs(raw - got).max() > 1e-3
