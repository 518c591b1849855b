"""MetaLM: encoders -> connectors -> slot bank -> interface decoder -> tied LM head.

    enc_tokens [B, Le] --TextEncoder (bidirectional per span)--> [B, Le, De]
        --Connector--> [B, Le, D]
    images [B, Ni, H, W, 3] (+ vl_prefix [B, Ni, Lp]) --VisionEncoder per image--> [B*Ni, S, Ev]
        --Connector--> [B*Ni, S', D] --> [B, Ni*S', D]
    slot bank = concat(text part, image part) [B, M, D]: the text grid first (M0 = Le), then
                image i's S' slots at M0 + i*S' (image tokens, then its prefix positions)
    tokens [B, L] --embed * sqrt(D)--> [B, L, D]
    decoder input = bank[slot_index] where slot_index >= 0, else the token embedding;
                    then + sinusoidal(positions) (or a learned table, GPT-2 style)
        --Decoder (causal AND same segment)--> [B, L, D] --embed^T--> logits float32[B, L, V]

The slot bank is a gather, not a scatter: every docked encoder (the text encoder's spans, each
image with its text prefix) concatenates its connected outputs into one bank per row and the
decoder reads it by index, so interleaved images and k-shot demonstrations (each encoded on its
own, eval/prompts.py) are only rows whose slot_index points further into the bank. Token
embeddings are scaled by sqrt(D) (fairseq convention, embeddings are initialised with std
D^-1/2); connector outputs are not scaled, the connector learns their size.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from metalm_jax.model.connector import Connector
from metalm_jax.model.layers import (
    RelativePositionBias,
    Stack,
    TransformerConfig,
    embed_tokens,
    embedding,
    finish_embeddings,
    param,
    sinusoidal,
)
from metalm_jax.model.masks import SegmentMask
from metalm_jax.model.vision import VisionConfig, VisionEncoder


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    decoder: TransformerConfig
    text_encoder: TransformerConfig | None
    connector: str = "linear"  # the text encoder's connector
    vision: VisionConfig | None = None
    vision_connector: str = "mlp3"
    vision_latents: int = 64  # slots per image with the resampler connector
    encoder_vocab_size: int = 0  # the text encoder's own vocabulary (0 = the decoder's)

    @property
    def image_slots(self) -> int:
        """Decoder slots one image (with its prefix) occupies in the bank."""
        if self.vision is None:
            return 0
        if self.vision_connector == "resampler":
            return self.vision_latents
        return self.vision.num_outputs


class TextEncoder(nn.Module):
    """Bidirectional encoder: token + learned absolute positions (+ T5 relative bias).

    Parameter names: token_embed/embedding [V, E], pos_embed [max_len, E], embed_norm (with
    cfg.embed_norm), embed_proj (with cfg.embed_dim), rel_bias, stack. E = embed_dim or d_model.
    """

    cfg: TransformerConfig
    vocab_size: int

    @nn.compact
    def __call__(self, tokens, segment_ids, positions, *, deterministic: bool = True):
        """int32[B, Le] x3 -> float[B, Le, De]."""
        cfg = self.cfg
        x = embed_tokens(cfg, self.vocab_size, tokens)
        width = x.shape[-1]
        if cfg.positions == "learned":
            table = self.param(
                "pos_embed",
                param(nn.initializers.normal(0.02), "max_len", "embed"),
                (cfg.max_len, width),
            )
            x = x + table[positions]
        else:
            x = x + sinusoidal(positions, width)
        x = finish_embeddings(self, cfg, x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        bias = RelativePositionBias(cfg, name="rel_bias")(positions) if cfg.rel_bias else None
        mask = SegmentMask(segment_ids, causal=False)  # each span its own segment
        return Stack(cfg, name="stack")(x, mask, bias, deterministic=deterministic)


def gather_slots(token_embeddings, bank, slot_index):
    """Decoder input: bank[b, slot_index[b, l]] where slot_index >= 0, else the embedding.

    token_embeddings [B, L, D], bank [B, M, D], slot_index int32[B, L] -> [B, L, D].
    Inside jit an index past the bank cannot raise and is clipped: the host checks every row
    against its types.SlotBank (the row builder, Batch.validate, Trainer.global_batch).
    """
    idx = jnp.clip(slot_index, 0, bank.shape[1] - 1)
    slots = jnp.take_along_axis(bank, idx[:, :, None], axis=1)
    return jnp.where(
        (slot_index >= 0)[:, :, None], slots.astype(token_embeddings.dtype), token_embeddings
    )


class MetaLM(nn.Module):
    """The whole model. `__call__(batch)` -> (logits float32[B, L, V], aux dict)."""

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        dec = cfg.decoder
        self.embed = embedding(cfg.vocab_size, dec.d_model, "embed")
        self.decoder = Stack(dec, name="decoder")
        if cfg.text_encoder is not None:
            self.text_encoder = TextEncoder(
                cfg.text_encoder, cfg.encoder_vocab_size or cfg.vocab_size, name="text_encoder"
            )
            self.connector = Connector(dec.d_model, cfg.connector, name="connector")
        if dec.positions == "learned":  # GPT-2 style; the default is sinusoidal
            self.pos_embed = self.param(
                "pos_embed",
                param(nn.initializers.normal(0.02), "max_len", "embed"),
                (dec.max_len, dec.d_model),
            )
        if cfg.vision is not None:
            if cfg.vision_connector == "resampler" and cfg.vision.text_prefix:
                raise ValueError(
                    "model.vision: the resampler connector needs a vision-only "
                    "encoder (vision.text_prefix = 0)"
                )
            self.vision_encoder = VisionEncoder(cfg.vision, name="vision_encoder")
            self.vision_connector = Connector(
                dec.d_model,
                cfg.vision_connector,
                num_latents=cfg.vision_latents,
                name="vision_connector",
            )

    def encode(self, batch, *, deterministic: bool = True):
        """The slot bank [B, M, D] (all connected encoder outputs), or None without encoders."""
        parts = []
        if self.cfg.text_encoder is not None:
            h = self.text_encoder(
                batch.enc_tokens,
                batch.enc_segment_ids,
                batch.enc_positions,
                deterministic=deterministic,
            )
            parts.append(self.connector(h))
        if self.cfg.vision is not None:
            if batch.images is None:
                raise ValueError("this model has a vision encoder: the Batch needs `images`")
            B, Ni = batch.images.shape[:2]
            flat = lambda x: None if x is None else x.reshape(B * Ni, *x.shape[2:])
            h = self.vision_encoder(
                flat(batch.images),
                flat(batch.image_valid),
                flat(batch.vl_prefix),
                flat(batch.vl_prefix_mask),
                deterministic=deterministic,
            )
            h = self.vision_connector(h)
            parts.append(h.reshape(B, Ni * h.shape[1], h.shape[-1]))
        if not parts:
            return None
        dt = self.cfg.decoder.compute_dtype
        return jnp.concatenate([p.astype(dt) for p in parts], axis=1)

    def __call__(
        self,
        batch,
        *,
        deterministic: bool = True,
        decode: bool = False,
        encode: bool = True,
        head: bool = True,
    ):
        """Logits float32[B, L, V] and aux. With `decode`, the decoder appends to its KV cache
        (see layers.Attention) and rows are single left-padded sequences; `encode=False` skips
        the encoders (extension steps of generation have no slots). `head=False` returns the
        decoder's output float32[B, L, D] in place of the logits (the fused loss of
        training/step.py applies the tied head itself, params["embed"]["embedding"])."""
        dec = self.cfg.decoder
        x = self.embed(batch.tokens).astype(dec.compute_dtype)
        if dec.embed_scale:
            x = x * jnp.sqrt(dec.d_model).astype(dec.compute_dtype)
        bank = self.encode(batch, deterministic=deterministic) if encode else None
        if bank is not None:
            x = gather_slots(x, bank.astype(x.dtype), batch.slot_index)
        if dec.positions == "learned":
            x = x + self.pos_embed[batch.positions].astype(x.dtype)
        else:
            x = x + sinusoidal(batch.positions, dec.d_model).astype(x.dtype)
        if decode:
            mask = batch.segment_ids > 0
        else:
            mask = SegmentMask(batch.segment_ids, causal=True)
        h = self.decoder(x, mask, deterministic=deterministic, decode=decode)
        if not head:
            return h.astype(jnp.float32), {"decoder_out": h, "slot_bank": bank}
        logits = self.embed.attend(h.astype(jnp.float32))
        return logits, {"decoder_out": h, "slot_bank": bank}
