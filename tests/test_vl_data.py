"""Images (decode, CLIP resize and crop to uint8), OpenMoji and local image-text builders,
standard sets."""

import doctest
import io
import json
import os

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from metalm_jax.data import images
from metalm_jax.data.corpora import image_text


def _png(array) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(np.asarray(array, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _noise(h, w, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def _text(x):
    return x.decode() if isinstance(x, bytes) else x


# --- images ---------------------------------------------------------------------------------


def test_module_docstring_examples_hold():
    assert doctest.testmod(images).failed == 0


def test_solid_color_keeps_its_uint8_values():
    """Pixels leave the host as uint8 (normalized on the device: tests/test_image_uint8.py)."""
    color = (255, 0, 128)
    img = PIL.Image.new("RGB", (40, 30), color)
    for kwargs in ({}, {"augment": True, "rng": np.random.default_rng(0)}):
        x = images.preprocess(img, 16, record_id="solid", **kwargs)
        assert x.shape == (16, 16, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, np.broadcast_to(color, x.shape))


def test_center_crop_keeps_the_middle_of_the_long_side():
    stripes = np.zeros((20, 60, 3), np.uint8)
    stripes[:, :20, 0] = stripes[:, 20:40, 1] = stripes[:, 40:, 2] = 255  # red | green | blue
    x = images.preprocess(_png(stripes), 20, record_id="stripes")
    np.testing.assert_array_equal(x, np.broadcast_to([0, 255, 0], x.shape))
    tall = images.preprocess(np.ascontiguousarray(stripes.transpose(1, 0, 2)), 8, record_id="tall")
    assert tall.shape == (8, 8, 3)


def test_augmentation_is_seeded_and_changes_the_image():
    img = _noise(48, 64)
    plain = images.preprocess(img, 32, record_id="n")
    a = images.preprocess(img, 32, record_id="n", augment=True, rng=np.random.default_rng(7))
    b = images.preprocess(img, 32, record_id="n", augment=True, rng=np.random.default_rng(7))
    c = images.preprocess(img, 32, record_id="n", augment=True, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.shape == plain.shape == (32, 32, 3) and a.dtype == plain.dtype == np.uint8
    assert not np.array_equal(a, plain) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="augment=True needs rng"):
        images.preprocess(img, 32, record_id="n", augment=True)


def test_decode_accepts_bytes_arrays_and_pil_and_flattens_alpha_on_white():
    arr = _noise(5, 7)
    for data in (_png(arr), arr, PIL.Image.fromarray(arr)):
        out = images.decode(data, "r")
        assert out.mode == "RGB" and out.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(out), arr)
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    np.testing.assert_array_equal(np.asarray(images.decode(_png(rgba), "t")), 255)
    rgb = _png(arr)
    assert images.rgb_bytes(rgb, "r") == rgb
    np.testing.assert_array_equal(
        np.asarray(PIL.Image.open(io.BytesIO(images.rgb_bytes(_png(rgba), "t")))), 255
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (_png(_noise(64, 64))[:1500], r"rec-7: corrupt or truncated PNG image"),
        (b"definitely not an image", r"rec-7: not a recognized image format"),
        (b"", r"rec-7: empty image bytes"),
        (
            np.zeros((4, 4), np.uint8),
            r"rec-7: expected a uint8\[H, W, 3\] image array, got uint8\[4, 4\]",
        ),
        (np.zeros((4, 4, 3), np.float32), r"rec-7: expected a uint8\[H, W, 3\]"),
        (PIL.Image.new("I;16", (4, 4)), r"rec-7: unsupported image mode 'I;16'"),
    ],
)
def test_bad_images_raise_naming_the_record(data, message):
    with pytest.raises(images.ImageError, match=message):
        images.decode(data, "rec-7")
    with pytest.raises(images.ImageError, match=message):
        images.preprocess(data, 8, record_id="rec-7")


# --- OpenMoji ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hex_id, caption",
    [
        ("1F468-200D-1F469-200D-1F467", "man, woman, girl"),
        ("1F1E9-1F1EA", "regional indicator symbol letter d, regional indicator symbol letter e"),
        ("1F44D-1F3FD", "thumbs up sign, emoji modifier fitzpatrick type-4"),
        ("0023-FE0F-20E3", "number sign, combining enclosing keycap"),
        ("E000", None),  # OpenMoji's private-use icons have no Unicode name
    ],
)
def test_emoji_captions(hex_id, caption):
    assert image_text.emoji_caption(hex_id) == caption


def test_emoji_inventory_and_split_are_deterministic():
    ids = image_text.emoji_ids()
    pairs = image_text.captioned_emojis()
    assert len(ids) == 4495
    assert 4024 <= len(pairs) <= 4495 - 367  # 4,024 with Python 3.11's Unicode 14 names
    splits = [image_text.emoji_split(h) for h, _ in pairs]
    assert splits == [image_text.emoji_split(h) for h, _ in pairs]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert 0.87 < share["train"] < 0.93 and 0.03 < share["validation"] < 0.07
    assert 0.03 < share["test"] < 0.07


def test_rendered_emojis_are_drawn_inside_the_canvas():
    face = np.asarray(image_text.render_emoji("1F600", 64)).astype(int)  # grinning face
    assert face.shape == (64, 64, 3)
    assert (face < 250).any(axis=-1).mean() > 0.2  # not blank
    assert ((face[..., 0] - face[..., 2]) > 100).sum() > 100  # yellow: COLR colors, not black
    # A ZWJ family is one ligated glyph (RAQM), so it fits inside the canvas with a margin.
    family = np.asarray(image_text.render_emoji("1F468-200D-1F469-200D-1F467", 64))
    ys, xs = np.nonzero((family < 250).any(axis=-1))
    assert ys.min() > 0 and xs.min() > 0 and ys.max() < 63 and xs.max() < 63


def test_openmoji_builder_prepares_a_subset(tmp_path):
    cfg = image_text.OpenMojiConfig(name="64_first30", size=64, limit=30)
    b = image_text.OpenMojiCaptions(config=cfg, data_dir=str(tmp_path), file_format="array_record")
    tfds.disable_progress_bar()
    b.download_and_prepare()
    assert "OpenMoji" in b.info.description and "CC BY-SA 4.0" in b.info.citation
    want = dict(image_text.captioned_emojis()[:30])
    seen = {}
    for split in ("train", "validation", "test"):
        source = b.as_data_source(split=split)
        assert len(source) > 0
        for i in range(len(source)):
            ex = source[i]
            hex_id = _text(ex["id"])
            assert hex_id not in seen and image_text.emoji_split(hex_id) == split
            assert _text(ex["caption"]) == want[hex_id]
            assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
            assert (ex["image"] < 250).any()
            seen[hex_id] = split
    assert set(seen) == set(want)


# --- local image-text pairs ---------------------------------------------------------------------


def _write_folder(folder):
    folder.mkdir()
    PIL.Image.fromarray(_noise(6, 9, seed=1)).save(folder / "a.png")
    PIL.Image.fromarray(_noise(8, 8, seed=2)).save(folder / "b.JPG", quality=95)
    PIL.Image.fromarray(np.zeros((5, 5, 4), np.uint8)).save(folder / "c.png")  # transparent
    (folder / "a.txt").write_text("noise\n  in a png\n")
    (folder / "b.txt").write_text("a jpeg")
    (folder / "c.txt").write_text("nothing at all")
    (folder / "notes.md").write_text("ignored: not an image")


def _prepare(tmp_path, paths, ids):
    # Put the ids below / above the validation cut so both splits are non-empty.
    frac = sorted(image_text._hash_fraction(i) for i in ids)[len(ids) // 2]
    cfg = image_text.local_image_text_config(paths, validation_fraction=frac)
    b = image_text.LocalImageText(
        config=cfg, data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    tfds.disable_progress_bar()
    b.download_and_prepare()
    out = {}
    for split in ("train", "validation"):
        source = b.as_data_source(split=split)
        out.update({_text(source[i]["id"]): source[i] for i in range(len(source))})
    return out


def test_local_image_text_from_a_folder_and_a_jsonl(tmp_path):
    _write_folder(tmp_path / "pics")
    other = tmp_path / "elsewhere.png"
    PIL.Image.fromarray(_noise(4, 3, seed=3)).save(other)
    jl = tmp_path / "meta" / "pairs.jsonl"
    jl.parent.mkdir()
    (jl.parent / "imgs").mkdir()
    PIL.Image.new("L", (3, 2), 7).save(jl.parent / "imgs" / "gray.png")
    rows = [{"image": "imgs/gray.png", "caption": "gray"}, {"image": str(other), "caption": "abs"}]
    jl.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    paths = [str(tmp_path / "pics"), str(jl)]
    pairs = list(image_text.read_local_pairs([os.path.abspath(p) for p in paths]))
    assert [(i, c) for i, _, c in pairs] == [
        ("pics/a.png", "noise in a png"),
        ("pics/b.JPG", "a jpeg"),
        ("pics/c.png", "nothing at all"),
        ("pairs.jsonl:1", "gray"),
        ("pairs.jsonl:3", "abs"),
    ]
    got = _prepare(tmp_path, paths, [i for i, _, _ in pairs])
    assert set(got) == {i for i, _, _ in pairs}
    np.testing.assert_array_equal(got["pics/a.png"]["image"], _noise(6, 9, seed=1))
    assert got["pics/b.JPG"]["image"].shape == (8, 8, 3)
    np.testing.assert_array_equal(got["pics/c.png"]["image"], 255)  # alpha flattened on white
    np.testing.assert_array_equal(got["pairs.jsonl:1"]["image"], 7)  # gray stored as RGB
    assert got["pairs.jsonl:1"]["image"].shape == (2, 3, 3)
    assert _text(got["pairs.jsonl:3"]["caption"]) == "abs"


@pytest.mark.parametrize(
    "lines, error, message",
    [
        (
            ['{"image": "x.png", "caption": "ok"}', "{nope"],
            ValueError,
            r"p.jsonl:2: not valid JSON",
        ),
        (['{"image": "x.png"}'], ValueError, r"p.jsonl:1: missing field 'caption'"),
        (['{"image": "x.png", "caption": " \\n"}'], ValueError, r"p.jsonl:1: empty caption"),
        (
            ['{"image": "y.png", "caption": "c"}'],
            FileNotFoundError,
            r"p.jsonl:1: image file .*y.png",
        ),
        (['["x.png", "c"]'], ValueError, r"p.jsonl:1: expected an object"),
        ([" "], ValueError, r"p.jsonl: empty file; expected one JSON object per line"),
    ],
)
def test_bad_jsonl_pairs_are_named(tmp_path, lines, error, message):
    PIL.Image.new("RGB", (2, 2)).save(tmp_path / "x.png")
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(error, match=message):
        list(image_text.read_local_pairs([str(tmp_path / "p.jsonl")]))


def test_bad_folders_and_images_are_named(tmp_path):
    folder = tmp_path / "pics"
    _write_folder(folder)
    (folder / "b.txt").unlink()
    with pytest.raises(ValueError, match=r"b.JPG: missing caption file 'b.txt'"):
        list(image_text.read_local_pairs([str(folder)]))
    (folder / "b.txt").write_text(" \n")
    with pytest.raises(ValueError, match=r"b.txt: empty caption"):
        list(image_text.read_local_pairs([str(folder)]))
    (folder / "b.txt").write_text("fine")
    (folder / "a.png").write_bytes(_png(_noise(64, 64))[:1500])
    with pytest.raises(images.ImageError, match=r"pics/a.png \(.*a.png\): corrupt or truncated"):
        _prepare(tmp_path, [str(folder)], ["pics/a.png", "pics/b.JPG", "pics/c.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: no .png / .jpg / .jpeg / .webp images"):
        list(image_text.read_local_pairs([str(empty)]))
    with pytest.raises(FileNotFoundError, match=r"nope' does not exist"):
        image_text.local_image_text_config([str(tmp_path / "nope")])
    with pytest.raises(
        ValueError, match=r"must be a folder, .jsonl \(.gz, .zst\), .tar \(webdataset\) or .parquet"
    ):
        image_text.local_image_text_config([str(folder / "b.txt")])


# --- standard sets ------------------------------------------------------------------------------


def _jpeg(array) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(np.asarray(array, np.uint8)).save(out, format="JPEG")
    return out.getvalue()


with tfds.core.registered.skip_registration():

    class _CocoCaptionsFiles(tfds.core.GeneratorBasedBuilder):
        """Writes what `tfds build coco_captions` writes (the features read here), without TF."""

        name = "coco_captions"
        VERSION = tfds.core.Version("1.1.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]

        def _info(self):
            features = {
                "image": tfds.features.Image(encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64}),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"val": self._generate_examples()}

        def _generate_examples(self):
            for i, texts in enumerate([["a cat", "a small cat"], ["two dogs"]]):
                captions = [{"text": t, "id": 10 * i + k} for k, t in enumerate(texts)]
                yield (
                    i,
                    {
                        "image": _jpeg(_noise(6 + i, 5)),
                        "image/filename": f"{i}.jpg",
                        "image/id": 100 + i,
                        "captions": captions,
                    },
                )


@pytest.fixture(scope="module")
def prepared_standard_sets(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("standard"))
    tfds.disable_progress_bar()
    _CocoCaptionsFiles(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def _coco_split(data_dir: str, split: str = "validation", captions_per_image: int = 2):
    """The configured image-text source the pipeline and the captioning evaluator read."""
    from metalm_jax.config import base_config
    from metalm_jax.data.feed import vl_pipeline

    cfg = base_config()
    cfg.images.name = "coco_captions"
    cfg.images.validation_split = "val"
    cfg.images.captions_per_image = captions_per_image
    cfg.data.tfds_data_dir = data_dir
    return vl_pipeline.image_split(cfg, split)


def test_coco_captions_are_read_from_prepared_files_without_tensorflow(prepared_standard_sets):
    src = _coco_split(prepared_standard_sets)
    got = [src[j] for j in range(len(src))]
    # every caption of an image, then cycled up to captions_per_image (2)
    assert [(g["id"], g["caption"]) for g in got] == [
        ("100#0", "a cat"),
        ("100#1", "a small cat"),
        ("101#0", "two dogs"),
        ("101#1", "two dogs"),
    ]
    assert got[0]["image"].shape == (6, 5, 3) and got[2]["image"].shape == (7, 5, 3)
    assert got[0]["image"].dtype == np.uint8


def test_coco_captions_with_mock_data(prepared_standard_sets):
    # USE_FILES: the metadata (features, splits) comes from data_dir, the examples are random.
    # USE_CODE cannot work here: COCO's builder code needs TensorFlow to describe its features.
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=4, policy=policy, data_dir=prepared_standard_sets):
        src = _coco_split("/unused", captions_per_image=3)
        got = [src[j] for j in range(len(src))]
    assert len(got) == 12 and len({g["id"].split("#")[0] for g in got}) == 4  # 4 images x 3
    for g in got:
        assert set(g) == {"id", "image", "caption"} and isinstance(g["caption"], str)
        assert g["image"].ndim == 3 and g["image"].shape[-1] == 3 and g["image"].dtype == np.uint8


def test_unprepared_standard_set_says_how_to_prepare_it(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"tfds build coco_captions --file_format=array_record"
    ):
        _coco_split(str(tmp_path))


def test_unknown_standard_set_is_named(prepared_standard_sets):
    with pytest.raises(ValueError, match="images.name='vqa' is not a caption set"):
        image_text.StandardCaptionSource("vqa", "val", prepared_standard_sets)
