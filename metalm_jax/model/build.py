"""From the experiment config to the model: ModelConfig, abstract init, parameter and FLOP counts.

The only place that reads the `model` section of the training config; layers get the small frozen
ModelConfig / TransformerConfig it builds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.model.layers import TransformerConfig
from metalm_jax.model.metalm import MetaLM, ModelConfig
from metalm_jax.types import Batch


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
        positions="sinusoidal",
        dropout=dec.dropout,
        dtype=m.dtype,
        scan=dec.scan,
        remat=dec.remat,
    )
    if cfg.data.seq_len > dec.max_len:
        raise ValueError(
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
        )
        longest = cfg.spans.max_len + int(cfg.spans.enc_bos)
        if longest > e.max_len:
            raise ValueError(
                f"spans.max_len={cfg.spans.max_len} (+<s>) is longer than the text encoder's "
                f"maximum length model.text_encoder.max_len={e.max_len}"
            )
    return ModelConfig(
        vocab_size=cfg.data.vocab_size, decoder=decoder, text_encoder=encoder, connector=m.connector
    )


def dummy_batch(batch_size: int, seq_len: int, enc_len: int) -> Batch:
    """An all-padding Batch of the given static shapes (for init and shape inference)."""
    z = lambda n: np.zeros((batch_size, n), np.int32)
    return Batch(
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
    batch = dummy_batch(1, seq_len, enc_len)
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


def train_flops_per_step(mc: ModelConfig, batch: int, seq_len: int, enc_len: int) -> dict:
    """Model FLOPs of one train step, decoder and encoder counted separately (no remat)."""
    d_mm, d_att = _stack_flops_per_token(mc.decoder, seq_len)
    head = 6.0 * mc.decoder.d_model * mc.vocab_size
    out = {"decoder": batch * seq_len * (d_mm + d_att + head), "encoder": 0.0}
    if mc.text_encoder is not None:
        e_mm, e_att = _stack_flops_per_token(mc.text_encoder, enc_len)
        conn = 6.0 * mc.text_encoder.d_model * mc.decoder.d_model
        out["encoder"] = batch * enc_len * (e_mm + e_att + conn)
    out["total"] = out["decoder"] + out["encoder"]
    return out
