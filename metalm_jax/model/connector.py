"""Connectors: map an encoder's outputs to the decoder width, one per docked encoder.

linear     one Dense (the paper's language-only connector)
mlp3       three Dense layers with GELU between (the paper's vision-language connector)
resampler  learned latent queries cross-attend over [outputs; latents] (Kosmos-1 style): a
           fixed number of slots per image whatever the encoder's length
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalm_jax.model.layers import layer_norm, param, xavier


class Connector(nn.Module):
    """Encoder outputs [B, S, E] -> decoder width [B, S', D].

    linear: S' = S; mlp3: three Dense layers with GELU between (S' = S); resampler:
    `num_latents` learned queries cross-attend over the outputs (S' = num_latents).
    """

    d_model: int
    kind: str = "linear"
    num_latents: int = 64
    num_heads: int = 8

    def _dense(self, x, d_out, name):
        w = self.param(name, param(xavier(), "embed_in", "embed"), (x.shape[-1], d_out))
        b = self.param(name + "_bias", param(nn.initializers.zeros, "embed"), (d_out,))
        return jnp.einsum("BSE,ED->BSD", x, w.astype(x.dtype)) + b.astype(x.dtype)

    @nn.compact
    def __call__(self, x):
        D = self.d_model
        if self.kind == "linear":
            return self._dense(x, D, "kernel")
        if self.kind == "mlp3":
            h = jax.nn.gelu(self._dense(x, D, "fc1"))
            h = jax.nn.gelu(self._dense(h, D, "fc2"))
            return self._dense(h, D, "fc3")
        if self.kind == "resampler":
            kv = layer_norm("ln_kv")(self._dense(x, D, "proj"))
            q = self.param(
                "latents",
                param(nn.initializers.normal(0.02), "latents", "embed"),
                (self.num_latents, D),
            )
            q = jnp.broadcast_to(q.astype(kv.dtype), (x.shape[0], self.num_latents, D))
            N = self.num_heads
            H = D // N

            def heads(y, name):
                w = self.param(
                    name, param(xavier(1.0, 0, (1, 2)), "embed", "heads", "kv"), (D, N, H)
                )
                return jnp.einsum("BSD,DNH->BSNH", y, w.astype(y.dtype))

            # queries attend over [outputs; latents] (Kosmos' xconnector style)
            src = jnp.concatenate([kv, q], axis=1)
            logits = jnp.einsum("BQNH,BSNH->BNQS", heads(q, "query"), heads(src, "key"))
            probs = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(H), axis=-1)
            out = jnp.einsum("BNQS,BSNH->BQNH", probs.astype(kv.dtype), heads(src, "value"))
            wo = self.param("out", param(xavier(1.0, (0, 1), 2), "heads", "kv", "embed"), (N, H, D))
            return q + jnp.einsum("BQNH,NHD->BQD", out, wo.astype(kv.dtype))
        raise ValueError(f"connector: unknown kind {self.kind!r}; use linear | mlp3 | resampler")
