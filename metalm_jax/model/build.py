"""From the experiment config to the model: ModelConfig, abstract init, parameter and FLOP counts.

The model package reads the experiment config only here: the modules (layers, metalm, vision,
connector) get the small frozen ModelConfig / TransformerConfig / VisionConfig built from it.
`derive` is what a run derives once at its top (loop.py, eval/load.py) and passes down:
the ModelConfig, and the RowFormat the data code builds rows in (span config, span encoding,
image layout), so the data code need not read the model section.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.data.rows import ImageLayout, RowFormat, empty_image_fields
from metalm_jax.data.spans import RetokenizedEncoding, SharedEncoding, SpanConfig
from metalm_jax.data.tokenizer import SpecialIds
from metalm_jax.model.layers import TransformerConfig
from metalm_jax.model.metalm import MetaLM, ModelConfig
from metalm_jax.model.vision import VisionConfig, vit_size
from metalm_jax.types import Batch, ConfigError


def _arch(section) -> dict:
    """The architecture-detail keys of a stack's config section (config._arch_keys)."""
    keys = ("activation", "ln_eps", "embed_norm", "embed_scale", "final_norm", "qkv_gain")
    return {k: section[k] for k in keys}


def model_config(cfg) -> ModelConfig:
    m = cfg.model
    dec = m.decoder
    decoder = TransformerConfig(
        num_layers=dec.num_layers,
        d_model=dec.d_model,
        num_heads=dec.num_heads,
        d_ff=dec.d_ff,
        max_len=dec.max_len,
        causal=True,
        norm=dec.norm,
        positions=dec.positions,
        dropout=dec.dropout,
        deepnorm_alpha=dec.deepnorm_alpha,
        deepnorm_beta=dec.deepnorm_beta,
        **_arch(dec),
        dtype=m.dtype,
        scan=dec.scan,
        remat=dec.remat,
        attention=m.attention,
    )
    if cfg.data.seq_len > dec.max_len:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} exceeds model.decoder.max_len={dec.max_len}"
        )
    encoder = None
    e = m.text_encoder
    if e.enabled:
        encoder = TransformerConfig(
            num_layers=e.num_layers,
            d_model=e.d_model,
            num_heads=e.num_heads,
            d_ff=e.d_ff,
            max_len=e.max_len,
            causal=False,
            norm=e.norm,
            positions=e.positions,
            rel_bias=e.rel_bias,
            rel_buckets=e.rel_buckets,
            rel_max_distance=e.rel_max_distance,
            dropout=e.dropout,
            dtype=m.dtype,
            scan=e.scan,
            remat=e.remat,
            attention=m.attention,
            embed_dim=e.embed_dim,
            **_arch(e),
        )
        if e.vocab_size and e.vocab_size != cfg.data.vocab_size and not e.tokenizer:
            raise ConfigError(
                f"model.text_encoder.vocab_size={e.vocab_size} differs from data.vocab_size="
                f"{cfg.data.vocab_size}, but spans are encoded with the decoder's tokenizer: set "
                "model.text_encoder.tokenizer to the encoder's own tokenizer.json"
            )
        longest = cfg.spans.max_len + int(cfg.spans.enc_bos)
        if longest > e.max_len and not e.tokenizer:  # re-tokenized spans are cut to max_len
            raise ConfigError(
                f"spans.max_len={cfg.spans.max_len} (+<s>) is longer than the text encoder's "
                f"maximum length model.text_encoder.max_len={e.max_len}"
            )
    vision = None
    v = m.vision
    if v.enabled:
        layers, width, heads, mlp, patch = (
            v.num_layers,
            v.d_model,
            v.num_heads,
            v.d_ff,
            v.patch_size,
        )
        if v.size:
            (layers, width, heads, mlp), patch = vit_size(v.size)
        if v.image_size % patch:
            raise ConfigError(
                f"model.vision.image_size={v.image_size} is not a multiple of the "
                f"patch size {patch}"
            )
        stack = TransformerConfig(
            num_layers=layers,
            d_model=width,
            num_heads=heads,
            d_ff=mlp,
            max_len=(v.image_size // patch) ** 2 + int(v.class_token) + v.text_prefix,
            causal=False,
            norm=v.norm,
            positions="learned",
            dropout=v.dropout,
            dtype=m.dtype,
            experts=v.experts and v.text_prefix > 0,
            scan=v.scan,
            remat=v.remat,
            attention=m.attention,
            **_arch(v),
        )
        vision = VisionConfig(
            stack=stack,
            patch_size=patch,
            image_size=v.image_size,
            class_token=v.class_token,
            text_prefix=0 if v.connector == "resampler" else v.text_prefix,
            vocab_size=cfg.data.vocab_size,
            pixel_mean=tuple(float(x) for x in cfg.images.mean),
            pixel_std=tuple(float(x) for x in cfg.images.std),
        )
    if cfg.images.enabled and vision is None:
        raise ConfigError("images.enabled needs model.vision.enabled")
    return ModelConfig(
        vocab_size=cfg.data.vocab_size,
        decoder=decoder,
        text_encoder=encoder,
        connector=m.connector,
        vision=vision,
        vision_connector=v.connector,
        vision_latents=v.latents,
        encoder_vocab_size=e.vocab_size,
    )


def image_layout(cfg, mc: ModelConfig | None = None) -> ImageLayout | None:
    """Where images sit in rows and in the slot bank (data/rows.ImageLayout), or None without
    images; `mc`: the config's ModelConfig, when derived already."""
    mc = mc or model_config(cfg)
    if not cfg.images.enabled:
        return None
    image_tokens = mc.image_slots - mc.vision.text_prefix
    return ImageLayout(
        seq_len=cfg.data.seq_len,
        images_per_row=cfg.images.images_per_row,
        image_slots=image_tokens,
        prefix_len=mc.vision.text_prefix,
        text_bank=cfg.spans.enc_length if mc.text_encoder is not None else 0,
        image_size=mc.vision.image_size,
        enc_length=cfg.spans.enc_length,
    )


def span_config(cfg, ids: SpecialIds) -> SpanConfig:
    """Without a text encoder there is nothing to encode spans with: plain LM rows. `ids`: the
    decoder tokenizer's special ids."""
    return SpanConfig(
        min_len=cfg.spans.min_len,
        max_len=cfg.spans.max_len,
        ratio=cfg.spans.ratio if cfg.model.text_encoder.enabled else 0.0,
        enc_length=cfg.spans.enc_length,
        enc_bos=cfg.spans.enc_bos,
        ids=ids,
    )


def encoder_tokenizer_path(cfg) -> str:
    """The text encoder's own tokenizer.json ("" when it shares the decoder's tokenizer)."""
    import os

    from metalm_jax.resources import resolve_path

    path = cfg.model.text_encoder.tokenizer
    if not path:
        return ""
    try:
        path = resolve_path(path)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ConfigError(f"model.text_encoder.tokenizer: {e}") from None
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise ConfigError(f"model.text_encoder.tokenizer: {path} is not a tokenizer.json file")
    return path


def span_encoding(cfg, tok):
    """How spans become encoder ids: the decoder tokenizer's own ids, or re-tokenized with the
    encoder's own tokenizer (model.text_encoder.tokenizer)."""
    path = encoder_tokenizer_path(cfg) if cfg.model.text_encoder.enabled else ""
    if not path:
        return SharedEncoding(cfg.spans.enc_bos, tok.ids)
    enc = RetokenizedEncoding(path, tok, cfg.model.text_encoder.max_len)
    want = cfg.model.text_encoder.vocab_size
    if want != enc.vocab_size:
        raise ConfigError(
            f"model.text_encoder.tokenizer {path} has {enc.vocab_size} tokens but "
            f"model.text_encoder.vocab_size={want}"
        )
    return enc


@dataclasses.dataclass(frozen=True)
class Derived:
    """What a run derives from its config once and passes down (see the module docstring)."""

    model: ModelConfig
    rows: RowFormat

    @property
    def layout(self) -> ImageLayout | None:
        return self.rows.layout


def derive(cfg, tok) -> Derived:
    """The ModelConfig and RowFormat of `cfg`; `tok`: the run's decoder tokenizer (data/
    tokenizer.py), which an encoder with its own tokenizer re-tokenizes from."""
    mc = model_config(cfg)
    rows = RowFormat(
        seq_len=cfg.data.seq_len,
        spans=span_config(cfg, tok.ids),
        encoding=span_encoding(cfg, tok),
        layout=image_layout(cfg, mc),
        text_encoder=mc.text_encoder is not None,
    )
    return Derived(mc, rows)


def dummy_batch(batch_size: int, seq_len: int, enc_len: int, layout=None) -> Batch:
    """An all-padding Batch of the given static shapes (for init and shape inference); with an
    ImageLayout the image fields too."""
    z = lambda n: np.zeros((batch_size, n), np.int32)
    images = empty_image_fields(layout, batch_size) if layout is not None else {}
    return Batch(
        **images,
        tokens=z(seq_len),
        slot_index=np.full((batch_size, seq_len), -1, np.int32),
        targets=z(seq_len),
        loss_weights=np.zeros((batch_size, seq_len), np.float32),
        segment_ids=z(seq_len),
        positions=z(seq_len),
        enc_tokens=z(enc_len),
        enc_segment_ids=z(enc_len),
        enc_positions=z(enc_len),
    )


def abstract_params(model: MetaLM, seq_len: int = 8, enc_len: int = 8):
    """Boxed (logically partitioned) parameter shapes, via jax.eval_shape: no memory used."""
    layout = None
    if model.cfg.vision is not None:
        v = model.cfg.vision
        layout = ImageLayout(seq_len, 1, 1, v.text_prefix, 0, v.image_size, enc_len)
    batch = dummy_batch(1, seq_len, enc_len, layout)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), batch)["params"])


def count_params(params) -> dict[str, int]:
    """Parameter counts per top-level module (decoder includes the tied embedding)."""
    counts: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        top = str(path[0].key)
        group = {"embed": "decoder"}.get(top, top)
        counts[group] = counts.get(group, 0) + int(np.prod(jnp.shape(leaf)))
    counts["total"] = sum(counts.values())
    return counts


def _stack_flops_per_token(c: TransformerConfig, context: int) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) per token for forward+backward (the 6N convention)."""
    n_matmul = c.num_layers * (4 * c.d_model * c.d_model + 2 * c.d_model * c.d_ff)
    return 6.0 * n_matmul, 12.0 * c.num_layers * c.d_model * context


def train_flops_per_step(
    mc: ModelConfig,
    batch: int,
    seq_len: int,
    enc_len: int,
    images_per_row: int = 0,
    enc_frozen_bottom: int = 0,
) -> dict:
    """Model FLOPs of one train step, decoder and encoder counted separately (no remat).

    The encoder's `enc_frozen_bottom` lowest layers (frozen, and nothing below them trained)
    run forward only: 2 FLOPs per weight and token instead of 6 (the train step puts frozen
    parameters behind a stop_gradient, so no backward pass reaches them)."""
    d_mm, d_att = _stack_flops_per_token(mc.decoder, seq_len)
    head = 6.0 * mc.decoder.d_model * mc.vocab_size
    out = {"decoder": batch * seq_len * (d_mm + d_att + head), "encoder": 0.0}
    if mc.text_encoder is not None:
        e_mm, e_att = _stack_flops_per_token(mc.text_encoder, enc_len)
        frac = min(enc_frozen_bottom, mc.text_encoder.num_layers) / mc.text_encoder.num_layers
        e_mm, e_att = (x * (1.0 - frac * 2.0 / 3.0) for x in (e_mm, e_att))
        conn = 6.0 * mc.text_encoder.d_model * mc.decoder.d_model
        out["encoder"] = batch * enc_len * (e_mm + e_att + conn)
    if mc.vision is not None and images_per_row:
        v = mc.vision
        n = v.num_outputs
        v_mm, v_att = _stack_flops_per_token(v.stack, n)
        patch = 6.0 * v.patch_size**2 * 3 * v.stack.d_model
        out["vision"] = batch * images_per_row * n * (v_mm + v_att + patch)
    out["total"] = out["decoder"] + out["encoder"] + out.get("vision", 0.0)
    return out


def step_flops(cfg, mc: ModelConfig | None = None) -> dict:
    """train_flops_per_step for an experiment config (global batch, images if enabled); `mc`:
    its ModelConfig, when derived already."""
    return train_flops_per_step(
        mc or model_config(cfg),
        cfg.train.batch_size,
        cfg.data.seq_len,
        cfg.spans.enc_length,
        cfg.images.images_per_row if cfg.images.enabled else 0,
        frozen_bottom_layers(cfg, "text_encoder", cfg.model.text_encoder.num_layers),
    )


def frozen_bottom_layers(cfg, module: str, num_layers: int) -> int:
    """How many of `module`'s lowest layers optim.frozen freezes together with its embeddings
    (0 when the embeddings train: the backward pass then reaches every layer)."""
    import re

    pats = [re.compile(p) for p in cfg.optim.frozen]
    frozen = lambda path: any(p.search(path) for p in pats)
    if not frozen(f"{module}/token_embed/embedding"):
        return 0
    n = 0
    while n < num_layers and frozen(f"{module}/stack/layers_{n}/attention/query"):
        n += 1
    return n
