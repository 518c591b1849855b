"""The optax chain and parameter groups.

    clip_by_global_norm -> adam/adamw (with the warm-up + decay schedule) -> per-group LR scale

Parameter groups are chosen by regular expressions on "/"-joined parameter paths such as
`text_encoder/stack/layers_0/attention/query`: `optim.frozen` patterns get no update at all
(optax.set_to_zero, and no optimizer state), `optim.lr_multipliers` scale the update of their
group. A frozen pattern that matches nothing is an error, so a typo never trains what you meant
to freeze.
"""

from __future__ import annotations

import re

import jax
import optax

from metalm_jax.types import ConfigError


def param_path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def schedule(o, total_steps: int) -> optax.Schedule:
    warm = optax.linear_schedule(0.0, o.lr, max(o.warmup_steps, 1))
    decay_steps = max(total_steps - o.warmup_steps, 1)
    end = o.lr * o.end_lr_frac
    if o.schedule == "cosine":
        after = optax.cosine_decay_schedule(o.lr, decay_steps, alpha=o.end_lr_frac)
    elif o.schedule == "linear":
        after = optax.linear_schedule(o.lr, end, decay_steps)
    elif o.schedule == "constant":
        after = optax.constant_schedule(o.lr)
    else:
        raise ConfigError(f"optim.schedule: unknown {o.schedule!r}; use cosine|linear|constant")
    return optax.join_schedules([warm, after], [o.warmup_steps])


def group_labels(params, frozen, multipliers) -> tuple[dict, dict]:
    """Labels every leaf 'frozen', 'mult_<i>' or 'train'; returns (labels tree, counts)."""
    frozen_re = [re.compile(p) for p in frozen]
    mult_re = [(re.compile(p), m) for p, m in multipliers]
    hits = {p.pattern: 0 for p in frozen_re}
    counts: dict[str, int] = {}

    def label(path, _):
        name = param_path(path)
        for r in frozen_re:
            if r.search(name):
                hits[r.pattern] += 1
                lab = "frozen"
                break
        else:
            lab = next((f"mult_{i}" for i, (r, _) in enumerate(mult_re) if r.search(name)), "train")
        counts[lab] = counts.get(lab, 0) + 1
        return lab

    labels = jax.tree_util.tree_map_with_path(label, params)
    unused = [p for p, n in hits.items() if n == 0]
    if unused:
        raise ConfigError(f"optim.frozen patterns match no parameter: {unused}")
    return labels, counts


def make_optimizer(o, total_steps: int, params) -> tuple[optax.GradientTransformation, dict]:
    """The full chain for config section `o` (cfg.optim); returns (tx, group counts)."""
    lr = schedule(o, total_steps)
    if o.name == "adamw":
        base = optax.adamw(lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay)
    elif o.name == "adam":
        base = optax.adam(lr, o.b1, o.b2, o.eps)
    else:
        raise ConfigError(f"optim.name: unknown optimizer {o.name!r}; use adam|adamw")
    mults = [tuple(x) for x in o.lr_multipliers]
    labels, counts = group_labels(params, list(o.frozen), mults)
    transforms = {"train": base, "frozen": optax.set_to_zero()}
    for i, (_, m) in enumerate(mults):
        transforms[f"mult_{i}"] = optax.chain(base, optax.scale(float(m)))
    # Frozen gradients are zeroed before clipping so they never shrink the trained ones.
    keep = {k: (optax.set_to_zero() if k == "frozen" else optax.identity()) for k in transforms}
    chain = [optax.multi_transform(keep, labels)]
    if o.clip_norm > 0:
        chain.append(optax.clip_by_global_norm(o.clip_norm))
    chain.append(optax.multi_transform(transforms, labels))
    return optax.chain(*chain), counts
