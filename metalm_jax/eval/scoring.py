"""Scoring by likelihood: held-out loss and perplexity on fixed eval sets, and option scoring,
the log-likelihood of candidate completions (rank classification).

For option scoring, rows come from eval/prompts.py (or any Batch row whose loss weights mark the
completion); the score of a row is minus its weighted NLL, so zero- and few-shot multiple choice
picks the option with the highest score, summed, per piece or calibrated (`option_scores`).
Rows are scored in fixed-size batches (one compile).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metalm_jax.training.step import token_nll
from metalm_jax.types import Batch


def heldout_loss(trainer, params, sets: dict) -> dict:
    """Held-out loss and perplexity per fixed eval set (sums divided once): eval/loss and
    eval/perplexity for 'text' and 'task', eval/<name>_loss and eval/<name>_perplexity for the
    others. `sets`: {name: [local batch, ...]} as data/feed/pipeline.eval_sets builds them."""
    out = {}
    for name, batches in sets.items():
        sums = jax.device_get([trainer.eval(params, trainer.global_batch(b)) for b in batches])
        weight = max(sum(float(s["weight"]) for s in sums), 1)
        loss = sum(float(s["loss_sum"]) for s in sums) / weight
        prefix = "eval/" if name in ("text", "task") else f"eval/{name}_"
        out[prefix + "loss"] = loss
        out[prefix + "perplexity"] = math.exp(min(loss, 50.0))
    return out


@functools.partial(jax.jit, static_argnames=("model",))
def _row_loglik(model, params, batch: Batch):
    logits, _ = model.apply({"params": params}, batch)
    return -jnp.sum(token_nll(logits, batch.targets) * batch.loss_weights, axis=-1)


def row_logliks(model, params, rows: list[dict], batch_size: int = 8) -> np.ndarray:
    """float64[len(rows)]: log-likelihood of each row's weighted tokens."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        pad = batch_size - len(chunk)
        chunk = chunk + [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * pad
        batch = Batch.from_dict({k: np.stack([r[k] for r in chunk]) for k in chunk[0]})
        out.append(np.asarray(_row_loglik(model, params, batch))[: batch_size - pad])
    return np.concatenate(out).astype(np.float64)


SCORING_MODES = ("sum", "mean", "calibrated")


def option_scores(mode: str, logliks, lengths, content_free=None) -> np.ndarray:
    """float[n_items, n_options]: what ranks the options under scoring `mode`.

      sum         the option's summed log-likelihood (GPT-3's rank classification): biased
                  towards options of fewer pieces, each piece costing log-probability
      mean        per piece (`lengths`: each option's piece count): no length bias
      calibrated  contextual calibration (Zhao et al. 2021): minus the summed log-likelihood of
                  the same option after a content-free input ("N/A") with the same
                  demonstrations (`content_free`, shaped like `logliks`). A preference the
                  model has whatever the input (an option that is more frequent, or shorter)
                  cancels; what remains is what the input adds

    logliks: float[n_items, n_options] summed log-likelihoods; lengths: int[n_options] or
    [n_items, n_options]."""
    logliks = np.asarray(logliks, np.float64)
    if mode == "sum":
        return logliks
    if mode == "mean":
        return logliks / np.maximum(np.asarray(lengths, np.float64), 1)
    if mode == "calibrated":
        if content_free is None:
            raise ValueError("calibrated scoring needs the content-free input's scores")
        return logliks - np.asarray(content_free, np.float64)
    raise ValueError(f"unknown scoring mode {mode!r}; expected one of {SCORING_MODES}")


def rank_options(scores: np.ndarray, n_options: int) -> np.ndarray:
    """int[n_examples]: argmax over consecutive groups of `n_options` scores."""
    return np.argmax(scores.reshape(-1, n_options), axis=-1)
