"""Image decoding and CLIP-style resizing (pure numpy + Pillow, no jax).

Owns the one path from stored image data to the uint8 pixels a Batch carries:

    bytes | uint8[H, W, 3] | PIL.Image --decode--> RGB PIL.Image --preprocess--> uint8[S, S, 3]

Pixels stay uint8 on the host and on the way to the device (a quarter of float32's bytes, and no
float pass over every pixel in the data workers); the vision encoder normalizes them inside the
jitted step (model/vision.normalize_pixels: x / 255, minus `images.mean`, divided by
`images.std`, in float32).

`decode` loads the whole image, so truncated or corrupt data fails here, with an `ImageError`
naming the caller's record id, and never later inside a batch. An image of more than
`max_pixels` pixels (width x height, read from its header before any pixel is decoded: a
decompression bomb, a PNG of a few KB claiming 100,000 x 100,000) is an ImageError too, never a
worker out of memory; the default is Pillow's own warning limit (`images.max_pixels`).
Transparent images are composited on white (emojis and icons are drawn on white); EXIF
orientation is applied.

`preprocess` is CLIP's evaluation transform up to normalization: bicubic resize of the shorter
side to `size`, center crop. With `augment=True` it takes a random-resized crop (area 50-100%,
aspect 3/4-4/3) and a random horizontal flip instead, drawn from the given
`np.random.Generator`, so a seed fixes the result:

    >>> img = PIL.Image.new("RGB", (320, 240), (255, 0, 0))   # 320 wide, 240 high
    >>> x = preprocess(img, 224, record_id="red.png")          # 240 -> 224, 299 x 224, crop 224
    >>> x.shape, x.dtype
    ((224, 224, 3), dtype('uint8'))
    >>> x[0, 0]                                # normalized on the device, not here
    array([255,   0,   0], dtype=uint8)
"""

from __future__ import annotations

import io
import math

import numpy as np
import PIL.Image
import PIL.ImageOps

from metalm_jax.types import DataError

# CLIP's pixel normalization: the default of images.mean / images.std, applied on the device
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Modes whose RGB conversion is meaningful. 16-bit and float modes ("I;16", "I", "F") would be
# clipped to garbage by Pillow's convert("RGB"), so they are refused rather than guessed at.
_SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
_EXIF_ORIENTATION = 0x0112
# Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS, about 9,459 x 9,459): above it Pillow warns
# of a decompression bomb, above twice it refuses. The default of `images.max_pixels`.
MAX_PIXELS = 89_478_485


class ImageError(DataError):
    """Image data that cannot be decoded, or too large to; the message names the record."""


def _open(data, record_id: str, max_pixels: int = MAX_PIXELS) -> PIL.Image.Image:
    """Opens encoded bytes, checks the size, then loads them (original mode), or raises
    ImageError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"{record_id}: expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{record_id}: empty image bytes")
    try:
        image = PIL.Image.open(io.BytesIO(data))  # reads the header only
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as e:
        # Pillow's own check, before ours can run (the warning when warnings are errors)
        raise ImageError(
            f"{record_id}: image over the pixel limit, not decoded ({e}); a decompression bomb?"
        ) from None
    except (OSError, SyntaxError, ValueError, AttributeError):  # incl. UnidentifiedImageError
        raise ImageError(
            f"{record_id}: not a recognized image format (corrupt or unsupported data, "
            f"{len(data)} bytes starting {bytes(data[:8])!r})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{record_id}: {width} x {height} image ({width * height:,} pixels) over the limit "
            f"of {max_pixels:,} (images.max_pixels), not decoded; a decompression bomb?"
        )
    try:
        image.load()
    except Exception as e:  # Pillow reports bad data as OSError, SyntaxError, ValueError, ...
        raise ImageError(
            f"{record_id}: corrupt or truncated {image.format} image ({type(e).__name__}: {e})"
        ) from None
    return image


def _to_rgb(image: PIL.Image.Image, record_id: str) -> PIL.Image.Image:
    if image.mode not in _SUPPORTED_MODES:
        raise ImageError(f"{record_id}: unsupported image mode {image.mode!r}")
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(data, record_id: str, max_pixels: int = MAX_PIXELS) -> PIL.Image.Image:
    """RGB image from encoded bytes, a uint8[H, W, 3] array or a PIL image.

    Arrays are what TFDS `Image` features return from `as_data_source`. Raises ImageError naming
    `record_id` for empty, corrupt or truncated bytes, bytes of more than `max_pixels` pixels, a
    wrong array shape/dtype or an unsupported mode.
    """
    if isinstance(data, PIL.Image.Image):
        return _to_rgb(data, record_id)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[-1] != 3:
            raise ImageError(
                f"{record_id}: expected a uint8[H, W, 3] image array, got "
                f"{data.dtype}{list(data.shape)}"
            )
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise ImageError(f"{record_id}: empty image array of shape {data.shape}")
        return PIL.Image.fromarray(np.ascontiguousarray(data), "RGB")
    return _to_rgb(_open(data, record_id, max_pixels), record_id)


def rgb_bytes(data: bytes, record_id: str, max_pixels: int = MAX_PIXELS) -> bytes:
    """`data` itself if it is an upright RGB JPEG or PNG, else the image re-encoded as RGB PNG.

    What a dataset should store: readers that decode with plain Pillow or OpenCV (TFDS
    `as_data_source` does) then get uint8[H, W, 3] without knowing about alpha, palettes or EXIF.
    Raises ImageError like `decode`.
    """
    image = _open(data, record_id, max_pixels)
    upright = image.getexif().get(_EXIF_ORIENTATION, 1) == 1
    if image.format in ("JPEG", "PNG") and image.mode == "RGB" and upright:
        return bytes(data)
    out = io.BytesIO()
    _to_rgb(image, record_id).save(out, format="PNG")
    return out.getvalue()


def _random_crop_box(width: int, height: int, rng: np.random.Generator):
    """(left, top, right, bottom) covering 50-100% of the area, aspect ratio 3/4-4/3."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.5, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # Very elongated images: fall back to the central square-ish crop of the whole short side.
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def preprocess(
    image,
    size: int,
    *,
    record_id: str,
    augment: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """uint8[size, size, 3] RGB pixels from anything `decode` accepts, not normalized (the
    vision encoder normalizes them on the device: model/vision.normalize_pixels).

    Without `augment`: bicubic resize so the shorter side is `size`, then the central
    size x size crop. With `augment` (requires `rng`): a random-resized crop (50-100% of the
    area) resized to size x size, flipped left-right with probability 1/2.
    """
    if size <= 0:
        raise ValueError(f"preprocess: size must be positive, got {size}")
    if augment and rng is None:
        raise ValueError("preprocess: augment=True needs rng (a np.random.Generator)")
    image = decode(image, record_id)
    width, height = image.size
    if augment:
        box = _random_crop_box(width, height, rng)
        image = image.resize((size, size), PIL.Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            image = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), PIL.Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.array(image, dtype=np.uint8)  # a copy: writable, and not tied to the PIL image


JPEG_QUALITY = 95  # prepared image-text rows (data/feed/prepare.py)


def resized_jpeg(data, size: int, record_id: str, quality: int = JPEG_QUALITY) -> bytes:
    """The image as an RGB JPEG whose shorter side is `size` (bicubic; never enlarged by more
    than needed to reach it), for prepared rows: the crop (central, or random with augment) is
    taken in training by `preprocess`. Raises ImageError like `decode`."""
    image = decode(data, record_id)
    width, height = image.size
    scale = size / min(width, height)
    if scale != 1:
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(new, PIL.Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
