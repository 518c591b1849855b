"""Transformer building blocks in reading order: config; parameter, activation and LayerNorm
helpers; embeddings; positions (sinusoidal, T5 relative bias); attention; MLP; block; stack.

Einsum legend:
  B batch   L query length   S key length   D model width   N heads   H head dim
  F mlp width   V vocab   K relative-position buckets

Parameters are float32 and carry logical axis names (embed, mlp, heads, kv, vocab, norm, ...);
compute runs in `cfg.dtype`; attention logits, softmax and everything after the LM head run in
float32.

Normalization (`cfg.norm`):
  deepnorm  post-LN with up-weighted residual, x = LN(alpha * x + f(x)), alpha = (2N)^(1/4), and
            the value/output/FFN weights scaled at init by beta = (8N)^(-1/4) (DeepNet; MetaLM
            uses it); N = this stack's depth
  post      plain post-LN (BERT, alpha = beta = 1)
  pre       pre-LN with a final LayerNorm (GPT-2; `final_norm=False` leaves it out, as CLIP's
            vision tower does for its hidden states)

Options that exist to run converted pretrained models exactly (metalm_jax/convert/):
`ln_eps` (BERT and ViT use 1e-12), `activation` (gelu = tanh approximation as in GPT-2,
gelu_exact = erf GELU as in BERT/ViT, quick_gelu = x * sigmoid(1.702 x) as in CLIP),
`embed_norm` (a LayerNorm on the summed embeddings: BERT's embeddings.LayerNorm, CLIP's
pre_layrnorm), `embed_scale` (token embeddings times sqrt(D), fairseq style; off for BERT and
GPT-2) and `embed_dim` (ELECTRA: embeddings narrower than the stack, projected up).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalm_jax.model.attention import BACKENDS, attend, dense_attention, resolve
from metalm_jax.model.masks import SegmentMask, cache_attention_mask


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    max_len: int
    causal: bool
    norm: str = "deepnorm"  # deepnorm | post | pre
    positions: str = "sinusoidal"  # sinusoidal | learned
    rel_bias: bool = False  # T5-style relative position bias (shared by all layers)
    rel_buckets: int = 32
    rel_max_distance: int = 128
    dropout: float = 0.0
    activation: str = "gelu"  # gelu (tanh approx.) | gelu_exact | quick_gelu | a jax.nn name
    ln_eps: float = 1e-5
    embed_norm: bool = False  # LayerNorm on the summed embeddings before the first layer
    embed_scale: bool = True  # token embeddings times sqrt(d_model)
    embed_dim: int = 0  # > 0 and != d_model: embeddings this wide, projected to d_model
    final_norm: bool = True  # pre-LN only: the LayerNorm after the last layer
    deepnorm_alpha: float = 0.0  # > 0: replaces (2N)^(1/4) (RESULTS, DeepNorm study)
    deepnorm_beta: float = 0.0  # > 0: replaces (8N)^(-1/4) (RESULTS, DeepNorm study)
    qkv_gain: float = 1.0  # Xavier gain of the query/key/value projections (TorchScale: 1/sqrt 2)
    dtype: str = "float32"
    experts: bool = False  # VLMo-style modality experts: separate MLPs for text / image positions
    scan: bool = False  # nn.scan over layers (one compiled block; params stacked on "layers")
    remat: str = "none"  # none | minimal | full | a name in jax.checkpoint_policies
    attention: str = "auto"  # dense | blockwise | splash | cudnn | auto (model/attention.py)

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.num_heads}")
        if self.norm not in ("deepnorm", "post", "pre"):
            raise ValueError(f"norm must be deepnorm|post|pre, got {self.norm!r}")
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be sinusoidal|learned, got {self.positions!r}")
        if self.attention not in BACKENDS:
            raise ValueError(
                f"model.attention={self.attention!r}: use one of {' | '.join(BACKENDS)}"
            )
        activation_fn(self.activation)  # fails early on an unknown name

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def alpha(self) -> float:
        if self.norm == "deepnorm" and self.deepnorm_alpha > 0:
            return self.deepnorm_alpha
        return (2.0 * self.num_layers) ** 0.25 if self.norm == "deepnorm" else 1.0

    @property
    def beta(self) -> float:
        if self.norm == "deepnorm" and self.deepnorm_beta > 0:
            return self.deepnorm_beta
        return (8.0 * self.num_layers) ** -0.25 if self.norm == "deepnorm" else 1.0


def param(init, *axes):
    return nn.with_logical_partitioning(init, axes)


def xavier(scale: float = 1.0, in_axis=0, out_axis=-1):
    """Xavier-normal over the flattened fan-in/fan-out axes, times `scale` (DeepNorm's beta)."""
    base = nn.initializers.variance_scaling(
        scale**2, "fan_avg", "truncated_normal", in_axis=in_axis, out_axis=out_axis
    )
    return base


def activation_fn(name: str):
    """The feed-forward nonlinearity by name (see the module docstring)."""
    special = {
        "gelu": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
        "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    }
    if name in special:
        return special[name]
    fn = getattr(jax.nn, name, None)
    if not callable(fn):
        raise ValueError(
            f"activation {name!r}: use gelu | gelu_exact | quick_gelu or a jax.nn function name"
        )
    return fn


def layer_norm(name: str | None = None, eps: float = 1e-5) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        dtype=jnp.float32,
        scale_init=param(nn.initializers.ones, "norm"),
        bias_init=param(nn.initializers.zeros, "norm"),
        name=name,
    )


def constrain(x):
    """Pins activations [B, L, D] to the logical layout (batch, length, act_embed); a no-op
    outside an `nn.logical_axis_rules` context (the trainer sets one while tracing)."""
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


def embedding(vocab: int, width: int, name: str) -> nn.Embed:
    """A token embedding table, initialised with std width^-1/2 (fairseq)."""
    return nn.Embed(
        vocab,
        width,
        embedding_init=param(nn.initializers.normal(width**-0.5), "vocab", "embed"),
        name=name,
    )


def embed_tokens(cfg: TransformerConfig, vocab: int, tokens, name: str = "token_embed"):
    """Token embeddings [B, L, width] (width = embed_dim or d_model), times sqrt(width) when
    `cfg.embed_scale`."""
    width = cfg.embed_dim or cfg.d_model
    x = embedding(vocab, width, name)(tokens)
    return x * jnp.sqrt(float(width)) if cfg.embed_scale else x


def finish_embeddings(module: nn.Module, cfg: TransformerConfig, x):
    """After the summed embeddings: `embed_norm` LayerNorm, then the `embed_dim` -> d_model
    projection (ELECTRA order); call inside a compact method of `module`."""
    if cfg.embed_norm:
        x = layer_norm("embed_norm", cfg.ln_eps)(x)
    if cfg.embed_dim and cfg.embed_dim != cfg.d_model:
        w = module.param(
            "embed_proj", param(xavier(), "embed_in", "embed"), (cfg.embed_dim, cfg.d_model)
        )
        b = module.param("embed_proj_bias", param(nn.initializers.zeros, "embed"), (cfg.d_model,))
        x = jnp.einsum("BLE,ED->BLD", x, w) + b
    return x


def sinusoidal(positions, d_model: int):
    """float32[B, L, D] sinusoidal embedding (Vaswani et al.) of int32[B, L] positions."""
    half = d_model // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    angles = positions[..., None].astype(jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def relative_buckets(relative, num_buckets: int, max_distance: int):
    """T5 bidirectional bucketing of int32 relative positions (key - query)."""
    num_buckets //= 2
    out = (relative > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(relative)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return out + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """float32[B, N, L, S] bias from int32[B, L] positions (restarting per segment)."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, positions):
        cfg = self.cfg
        table = self.param(
            "rel_embedding",
            param(nn.initializers.normal(0.02), "relpos_buckets", "heads"),
            (cfg.rel_buckets, cfg.num_heads),
        )
        rel = positions[:, None, :] - positions[:, :, None]  # [B, L, S] key - query
        buckets = relative_buckets(rel, cfg.rel_buckets, cfg.rel_max_distance)
        return jnp.einsum("BLSN->BNLS", table[buckets])


class Attention(nn.Module):
    """Multi-head self-attention over a mask and an optional float32[B, N, L, S] bias.

    `mask` is a boolean [B, 1, L, S] array (the dense reference path) or a masks.SegmentMask,
    which `backend` (model/attention.py, chosen once per stack) computes without [L, S] arrays.
    With `decode`, keys and values are kept in the "cache" collection (initialised at the full
    decoding length by `model.init`) and each call appends its T new positions at the cache
    index; `mask` is then bool[B, T], which new positions are real (left padding is not), and
    the mask over the cache is masks.cache_attention_mask.
    """

    cfg: TransformerConfig
    decode: bool = False
    backend: str = "dense"

    @nn.compact
    def __call__(self, x, mask, bias=None, *, deterministic: bool = True):
        cfg = self.cfg
        D, N, H = cfg.d_model, cfg.num_heads, cfg.head_dim
        dt = cfg.compute_dtype

        def proj(name, scale, bias=True):
            w = self.param(name, param(xavier(scale, 0, (1, 2)), "embed", "heads", "kv"), (D, N, H))
            y = jnp.einsum("BLD,DNH->BLNH", x.astype(dt), w.astype(dt))
            if bias:
                b = self.param(name + "_bias", param(nn.initializers.zeros, "heads", "kv"), (N, H))
                y = y + b.astype(dt)
            return y

        q = proj("query", cfg.qkv_gain)
        # No key bias: softmax is invariant to it, so its gradient is identically zero (only
        # rounding noise, which Adam would amplify into different updates on different meshes).
        k = proj("key", cfg.qkv_gain, bias=False)
        v = proj("value", cfg.qkv_gain * cfg.beta)
        if self.decode:
            k, v, mask = self._cached(k, v, mask)
        if isinstance(mask, SegmentMask):
            out = attend(self.backend, q, k, v, mask, bias)
        else:
            out = dense_attention(q, k, v, mask, bias)
        wo = self.param(
            "out", param(xavier(cfg.beta, (0, 1), 2), "heads", "kv", "embed"), (N, H, D)
        )
        bo = self.param("out_bias", param(nn.initializers.zeros, "embed"), (D,))
        return jnp.einsum("BLNH,NHD->BLD", out, wo.astype(dt)) + bo.astype(dt)

    def _cached(self, k, v, valid):
        """Appends k, v [B, T, N, H] at the cache index; returns the whole cache and its mask."""
        init = not self.has_variable("cache", "key")
        ck = self.variable("cache", "key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "value", jnp.zeros, v.shape, v.dtype)
        cvalid = self.variable("cache", "valid", jnp.zeros, k.shape[:2], jnp.bool_)
        cidx = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if init:  # model.init: the cache is only being shaped
            return k, v, cache_attention_mask(valid, valid, 0)
        i, T = cidx.value, k.shape[1]
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, i, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, i, 0, 0))
        cvalid.value = jax.lax.dynamic_update_slice(cvalid.value, valid, (0, i))
        cidx.value = i + T
        return ck.value, cv.value, cache_attention_mask(valid, cvalid.value, i)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, *, deterministic: bool = True):
        cfg = self.cfg
        dt = cfg.compute_dtype
        wi = self.param("wi", param(xavier(cfg.beta), "embed", "mlp"), (cfg.d_model, cfg.d_ff))
        bi = self.param("wi_bias", param(nn.initializers.zeros, "mlp"), (cfg.d_ff,))
        wo = self.param("wo", param(xavier(cfg.beta), "mlp", "embed"), (cfg.d_ff, cfg.d_model))
        bo = self.param("wo_bias", param(nn.initializers.zeros, "embed"), (cfg.d_model,))
        h = jnp.einsum("BLD,DF->BLF", x.astype(dt), wi.astype(dt)) + bi.astype(dt)
        h = activation_fn(cfg.activation)(h)
        h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        return jnp.einsum("BLF,FD->BLD", h, wo.astype(dt)) + bo.astype(dt)


class Block(nn.Module):
    """One Transformer layer; residual placement per `cfg.norm` (see module docstring).

    With `cfg.experts`, the feed-forward is a pair of modality experts (VLMo): `modality`
    int32[B, L] picks `mlp_image` (1) or `mlp_text` (0) per position.
    """

    cfg: TransformerConfig
    deterministic: bool = True
    decode: bool = False
    backend: str = "dense"  # attention backend (Stack resolves it)

    def _mlp(self, x, modality):
        cfg, det = self.cfg, self.deterministic
        if not cfg.experts:
            return Mlp(cfg, name="mlp")(x, deterministic=det)
        text = Mlp(cfg, name="mlp_text")(x, deterministic=det)
        image = Mlp(cfg, name="mlp_image")(x, deterministic=det)
        return jnp.where((modality == 1)[..., None], image, text)

    @nn.compact
    def __call__(self, x, mask, bias=None, modality=None):
        cfg, det = self.cfg, self.deterministic
        drop = nn.Dropout(cfg.dropout)
        attn = Attention(cfg, self.decode, self.backend, name="attention")
        if cfg.norm == "pre":
            h = attn(layer_norm("ln_attention", cfg.ln_eps)(x), mask, bias, deterministic=det)
            x = x + drop(h, deterministic=det)
            h = self._mlp(layer_norm("ln_mlp", cfg.ln_eps)(x), modality)
            return constrain(x + drop(h, deterministic=det))
        h = attn(x, mask, bias, deterministic=det)
        x = layer_norm("ln_attention", cfg.ln_eps)(cfg.alpha * x + drop(h, deterministic=det))
        h = self._mlp(x, modality)
        return constrain(
            layer_norm("ln_mlp", cfg.ln_eps)(cfg.alpha * x + drop(h, deterministic=det))
        )


class _ScannedBlock(Block):
    """Block with the (carry, output) signature nn.scan needs."""

    def __call__(self, x, mask, bias=None, modality=None):
        # post-LN norms in float32; the scan carry must keep the compute dtype
        return super().__call__(x, mask, bias, modality).astype(x.dtype), None


def remat_policy(name: str):
    """None for no remat; else a jax.checkpoint policy (presets minimal / full, or by name)."""
    if name == "none":
        return None
    presets = {
        "full": jax.checkpoint_policies.nothing_saveable,
        "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }
    if name in presets:
        return presets[name]
    policy = getattr(jax.checkpoint_policies, name, None)
    if policy is None:
        raise ValueError(
            f"remat: unknown policy {name!r}; use none|minimal|full or a name in "
            "jax.checkpoint_policies"
        )
    return policy


class Stack(nn.Module):
    """`num_layers` Blocks, then a final LayerNorm for pre-LN (unless `final_norm` is off).

    Unrolled (default), the layers are named layers_0 .. layers_{N-1}, so optimizer parameter
    groups can freeze single layers. With `cfg.scan` they are one nn.scan named `layers` whose
    parameters carry a leading "layers" axis: one compiled block, much faster to compile.
    `cfg.remat` wraps the block in jax.checkpoint with the chosen policy.

    `mask`: a masks.SegmentMask for full sequences (the attention backend `cfg.attention`
    is resolved here, once for all layers, and the dense one gets the boolean mask built
    once), or while decoding the bool[B, T] validity of the new positions (dense, KV cache).
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(
        self, x, mask, bias=None, modality=None, *, deterministic: bool = True, decode=False
    ):
        cfg = self.cfg
        policy = remat_policy(cfg.remat)
        backend = "dense"
        if isinstance(mask, SegmentMask):
            where = "/".join(self.scope.path) or "stack"
            backend = resolve(cfg.attention, where, mask, bias is not None, cfg)
            if backend == "dense":
                mask = mask.dense()
        if cfg.scan:
            block = _ScannedBlock
            if policy is not None:
                block = nn.remat(block, policy=policy, prevent_cse=False)
            scanned = nn.scan(
                block,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = scanned(cfg, deterministic, decode, backend, name="layers")(
                x, mask, bias, modality
            )
        else:
            block = Block if policy is None else nn.remat(Block, policy=policy)
            for i in range(cfg.num_layers):
                x = block(cfg, deterministic, decode, backend, name=f"layers_{i}")(
                    x, mask, bias, modality
                )
        if cfg.norm == "pre" and cfg.final_norm:
            x = layer_norm("ln_final", cfg.ln_eps)(x)
        return x
