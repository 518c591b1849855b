"""What a trained decoder's layers carry: how much its prediction depends on the input, and how
much of each layer's output is one vector shared by every position (RESULTS, "Decoder
normalization at the tiny size").

    python benchmarks/deepnorm_probe.py runs/deepnorm/dn runs/deepnorm/post

For each run (its latest checkpoint, parameters only) on 2 random rows of 256 tokens: the mean KL
of each position's predicted distribution to their average (0 = the same prediction
everywhere), how often the argmax is the input token, and per captured module output of width
d_model the norm of its mean over positions against the mean norm of the deviations from it.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.eval.load import load_run
from metalm_jax.types import Batch


def probe(run: str) -> None:
    cfg, _, inf, params = load_run(run)
    vocab, seq, width = cfg.data.vocab_size, cfg.data.seq_len, cfg.model.decoder.d_model
    batch = Batch.from_dict(testing.random_batch(2, seq, vocab, SpanConfig(8, 32, 0.0, 96)))
    (logits, _), st = inf.model.apply(
        {"params": params}, batch, deterministic=True, capture_intermediates=True
    )
    lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), -1)).reshape(-1, vocab)
    p = np.exp(lp)
    kl = (p * (lp - np.log(p.mean(0) + 1e-30))).sum(-1).mean()
    copy = (lp.argmax(-1) == np.asarray(batch.tokens).reshape(-1)).mean()
    print(f"{run}: mean KL to the average prediction {kl:.4f}, argmax = input {copy:.3f}")
    for path, v in jax.tree_util.tree_flatten_with_path(st["intermediates"])[0]:
        a = np.asarray(v)
        if a.ndim == 3 and a.shape[-1] == width:
            a = a.reshape(-1, width)
            mu = a.mean(0)
            dev = np.linalg.norm(a - mu, axis=1).mean()
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            print(f"  {name:56s} |mean| {np.linalg.norm(mu):8.3f}   mean |deviation| {dev:8.3f}")


if __name__ == "__main__":
    for r in sys.argv[1:]:
        probe(r)
