"""Vision encoders: a ViT and a joint vision-language encoder (VLMo-style), plus connectors.

Pixels: the Batch carries uint8[B, H, W, 3] (types.py); `normalize_pixels` turns them into
float32 (x / 255 - mean) / std at the encoder's input, inside the jitted step, with the run's
`images.mean` / `images.std` (VisionConfig.pixel_mean / pixel_std).

ViT: normalized images float32[B, H, W, 3] -> patches (row-major: patch k is row k // (W/p),
column k % (W/p)) -> linear patch embedding + learned positions (+ optional class token first) ->
bidirectional Transformer -> float[B, S, D] with S = P (+1).

Joint VL encoder: the image's patch embeddings followed by the text prefix's token embeddings
(+ their own learned positions) in one bidirectional Transformer; with `experts`, image and text
positions use separate feed-forward experts (VLMo's mixture of modality experts). Output
[B, S + Lp, D]; padding prefix positions are masked out.

Position tables are learned for `image_size`; another resolution (224 in pretraining, 384 in
finetuning) bilinearly interpolates the patch grid of the table (`interpolate_positions`).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalm_jax.data.images import CLIP_MEAN, CLIP_STD
from metalm_jax.model.layers import (
    Stack,
    TransformerConfig,
    embedding,
    finish_embeddings,
    param,
    xavier,
)
from metalm_jax.model.masks import SegmentMask

VIT_SIZES = {  # name -> (layers, width, heads, mlp)
    "Ti": (12, 192, 3, 768),
    "S": (12, 384, 6, 1536),
    "B": (12, 768, 12, 3072),
    "L": (24, 1024, 16, 4096),
}


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    stack: TransformerConfig  # causal=False
    patch_size: int
    image_size: int
    class_token: bool = False
    text_prefix: int = 0  # > 0: a joint VL encoder reading up to this many prefix tokens
    vocab_size: int = 0  # the prefix tokens' vocabulary (joint encoder only)
    pixel_mean: tuple = CLIP_MEAN  # per-channel (RGB) normalization of uint8 pixels: images.mean
    pixel_std: tuple = CLIP_STD  # images.std

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2 + int(self.class_token)

    @property
    def num_outputs(self) -> int:
        """Encoder outputs per image: image tokens, then prefix positions."""
        return self.num_image_tokens + self.text_prefix


def vit_size(name: str) -> tuple[tuple[int, int, int, int], int]:
    """'B/16' -> ((layers, width, heads, mlp), patch size)."""
    try:
        size, patch = name.split("/")
        return VIT_SIZES[size], int(patch)
    except (ValueError, KeyError):
        raise ValueError(
            f"ViT size {name!r}: use one of {sorted(VIT_SIZES)} + '/patch', e.g. 'B/16'"
        ) from None


def normalize_pixels(images, mean, std):
    """uint8[..., 3] RGB pixels -> float32[..., 3]: (x / 255 - mean) / std per channel, in
    float32 (the formula the host applied before pixels travelled as uint8)."""
    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize_pixels: expected uint8 pixels, got {images.dtype}")
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def patchify(images, patch: int):
    """float[B, H, W, C] -> float[B, (H/p)(W/p), p*p*C], patches in row-major order."""
    b, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not divisible into {patch}x{patch} patches")
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def interpolate_positions(table, old_grid: int, new_grid: int, extra: int):
    """Resizes a learned position table [extra + old^2, D] to [extra + new^2, D] (bilinear)."""
    if old_grid == new_grid:
        return table
    head, grid = table[:extra], table[extra:]
    grid = grid.reshape(old_grid, old_grid, -1)
    grid = jax.image.resize(grid, (new_grid, new_grid, grid.shape[-1]), "bilinear")
    return jnp.concatenate([head, grid.reshape(new_grid * new_grid, -1)], axis=0)


class VisionEncoder(nn.Module):
    """ViT, or a joint vision-language encoder when `cfg.text_prefix > 0`.

    images uint8[B, H, W, 3] (normalized here by cfg.pixel_mean / pixel_std), or
    float[B, H, W, 3] already normalized (a converter's parity test, a processor's pixel_values);
    prefix int32[B, Lp] and prefix_mask int32[B, Lp] (1 = real
    token) for the joint encoder; image_valid int32[B] (0 = no image: the row is padding).
    Returns float[B, S (+ Lp), D].
    """

    cfg: VisionConfig

    @nn.compact
    def __call__(self, images, image_valid, prefix=None, prefix_mask=None, *, deterministic=True):
        cfg, st = self.cfg, self.cfg.stack
        D, dt = st.d_model, st.compute_dtype
        if jnp.issubdtype(images.dtype, jnp.integer):
            images = normalize_pixels(images, cfg.pixel_mean, cfg.pixel_std)
        patches = patchify(images.astype(dt), cfg.patch_size)
        w = self.param("patch_embed", param(xavier(), "patch", "embed"), (patches.shape[-1], D))
        b = self.param("patch_bias", param(nn.initializers.zeros, "embed"), (D,))
        x = jnp.einsum("BPC,CD->BPD", patches, w.astype(dt)) + b.astype(dt)
        extra = int(cfg.class_token)
        if cfg.class_token:
            cls = self.param("cls", param(nn.initializers.zeros, "norm", "embed"), (1, D))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(dt), (x.shape[0], 1, D)), x], 1)
        table = self.param(
            "pos_embed",
            param(nn.initializers.normal(0.02), "max_len", "embed"),
            (cfg.num_image_tokens, D),
        )
        grid = int(math.isqrt(patches.shape[1]))
        x = x + interpolate_positions(table, cfg.grid, grid, extra).astype(dt)[None]
        x = finish_embeddings(self, st, x).astype(dt)  # CLIP's pre_layrnorm (image tokens only)
        valid = jnp.broadcast_to(image_valid[:, None] > 0, x.shape[:2])
        modality = jnp.ones(x.shape[:2], jnp.int32)
        if cfg.text_prefix:
            t = embedding(cfg.vocab_size, D, "token_embed")(prefix).astype(dt)
            t = t * jnp.sqrt(D).astype(dt)
            tpos = self.param(
                "prefix_pos_embed",
                param(nn.initializers.normal(0.02), "max_len", "embed"),
                (cfg.text_prefix, D),
            )
            x = jnp.concatenate([x, t + tpos.astype(dt)[None]], axis=1)
            valid = jnp.concatenate([valid, (prefix_mask > 0) & (image_valid[:, None] > 0)], 1)
            modality = jnp.concatenate([modality, jnp.zeros_like(prefix)], axis=1)
        x = nn.Dropout(st.dropout)(x, deterministic=deterministic)
        # one segment: the image and its prefix, real positions first (the prefix is
        # right-padded): not packed, so cuDNN's padding mask can express it
        seg = valid.astype(jnp.int32)
        mask = SegmentMask(seg, causal=False, packed=False)
        return Stack(st, name="stack")(x, mask, None, modality, deterministic=deterministic)
