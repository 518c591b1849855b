"""Finetuning from a pretraining run: the config it resolves to, presets, and the frozen check.

`prepare_config(cfg, workdir)` turns a finetuning config (`finetune.from_run` set) into the run
it describes, before anything is built:
  * the model is the source run's (its saved `model` section, plus data.vocab_size and the
    pixel normalization), so a finetune config needs no copy of the pretraining sizes;
  * its tokenizer is copied into the new workdir (the run stays usable if the source goes);
  * `init` gets one Orbax entry per restored top-level module (`finetune.restore`): a
    params-only partial restore, checked leaf by leaf (train/init_from.py); the optimizer and
    step start fresh;
  * the preset (`finetune.preset`) adds its patterns to optim.frozen.

Presets over parameter groups (PAPER.md §3.4, §4):

  decoder_frozen   embed, pos_embed, decoder frozen; encoders + connectors train (the paper)
  full             everything trains (the GPT baseline's finetuning)
  connector_only   only the connectors train (a floor)
  decoder_only     encoders and connectors frozen
  none             only optim.frozen

`check_frozen_loaded` refuses a new run whose optim.frozen freezes parameters that no `init`
entry loads: a frozen module left at its random init for the whole run (the paper freezes a
*pretrained* encoder), unless optim.allow_frozen_random says it is meant.
"""

from __future__ import annotations

import os
import re

import jax
from etils import epath

from metalm_jax import paths
from metalm_jax.train.optimizer import param_path
from metalm_jax.types import ConfigError

PRESETS = {
    "decoder_frozen": [r"^(embed|pos_embed|decoder)(/|$)"],
    "full": [],
    "connector_only": [r"^(?!(connector|vision_connector)(/|$))"],
    "decoder_only": [r"^(text_encoder|vision_encoder|connector|vision_connector)(/|$)"],
    "none": [],
}

# What each init format loads (train/init_from.py), unless the entry names a target.
INIT_TARGETS = {
    "hf_bert": ("text_encoder",),
    "hf_gpt2": ("embed", "pos_embed", "decoder"),
    "hf_clip_vision": ("vision_encoder",),
    "hf_vit": ("vision_encoder",),
}


def _run_dir(step_dir: str) -> str:
    """checkpoints/<step> -> the run's workdir (local or a URL)."""
    if paths.is_remote(step_dir):
        return os.fspath(epath.Path(step_dir).parent.parent)
    return os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))


def prepare_config(cfg, workdir: str, log=print):
    """The resolved finetuning config (a new ConfigDict); `cfg` itself when not finetuning."""
    ft = cfg.finetune
    if ft.preset not in PRESETS:
        raise ConfigError(f"finetune.preset={ft.preset!r}: expected one of {sorted(PRESETS)}")
    if not ft.from_run:
        if ft.preset not in ("decoder_frozen", "none") and cfg.task.name:
            log(f"note: finetune.preset={ft.preset} has no effect without finetune.from_run")
        return cfg
    from metalm_jax.config import with_defaults
    from metalm_jax.train.init_from import (
        orbax_checkpoint_dir,
        orbax_param_metadata,
        orbax_saved_config,
    )

    step_dir = orbax_checkpoint_dir(ft.from_run, log)
    saved = with_defaults(orbax_saved_config(step_dir))
    out = cfg.copy_and_resolve_references()
    with out.unlocked():
        out.model = saved.model
        out.data.vocab_size = saved.data.vocab_size
        out.images.enabled = saved.images.enabled
        out.images.mean, out.images.std = saved.images.mean, saved.images.std
        out.spans.enc_bos = saved.spans.enc_bos
        _copy_tokenizer(saved, _run_dir(step_dir), workdir, out)
        have = sorted(orbax_param_metadata(step_dir))
        wanted = have if "all" in ft.restore else list(ft.restore)
        missing = [m for m in wanted if m not in have]
        if missing:
            raise ConfigError(
                f"finetune.restore: {step_dir} has no params/{missing} (it has {have})"
            )
        init = [dict(format="orbax", source=step_dir, target=m) for m in wanted]
        out.init = init + [dict(e) for e in cfg.init if not set(_targets(e)) & set(wanted)]
        out.optim.frozen = list(cfg.optim.frozen) + PRESETS[ft.preset]
    skipped = [m for m in have if m not in wanted]
    log(
        f"== finetuning from {step_dir}: restoring {', '.join(wanted)}"
        + (f"; not restored: {', '.join(skipped)}" if skipped else "")
        + f"; preset {ft.preset}"
    )
    return out


def _copy_tokenizer(saved, source_dir: str, workdir: str, out) -> None:
    """The source run's tokenizer (its saved tokenizer.json, its data.tokenizer_path, or its
    tokenizer.model) copied into the new workdir under the name of its kind."""
    from metalm_jax.data.tokenizer import open_tokenizer

    src = os.fspath(epath.Path(source_dir) / "tokenizer.json")
    if not epath.Path(src).is_file():
        src = saved.data.tokenizer_path or os.fspath(epath.Path(source_dir) / "tokenizer.model")
    if not epath.Path(src).is_file():
        raise FileNotFoundError(f"finetune.from_run: the source run's tokenizer {src} is missing")
    dst = epath.Path(workdir) / open_tokenizer(src).saved_name
    if not dst.exists() and jax.process_index() == 0:
        paths.copy_file(src, dst)
    out.data.tokenizer_path = ""  # the workdir's copy


def _targets(entry) -> tuple:
    entry = dict(entry)
    if entry.get("target"):
        return (entry["target"],)
    return INIT_TARGETS.get(entry.get("format"), ())


def check_frozen_loaded(cfg, abstract_params) -> None:
    """Raises naming the frozen parameters of modules no `init` entry loads (see the module
    docstring), unless optim.allow_frozen_random."""
    if cfg.optim.allow_frozen_random or not cfg.optim.frozen:
        return
    loaded = {t for e in cfg.init for t in _targets(e)}
    pats = [re.compile(p) for p in cfg.optim.frozen]
    bad = []
    for path, _ in jax.tree_util.tree_leaves_with_path(abstract_params):
        name = param_path(path)
        if name.split("/")[0] not in loaded and any(p.search(name) for p in pats):
            bad.append(name)
    if bad:
        shown = ", ".join(bad[:6]) + (f", ... ({len(bad)} in all)" if len(bad) > 6 else "")
        raise ConfigError(
            f"optim.frozen freezes parameters that nothing loaded, so they would stay at their "
            f"random init for the whole run: {shown}. Load them with an `init` entry (e.g. "
            "dict(format='hf_bert', source=...) or finetune.from_run), drop the pattern from "
            "optim.frozen, or set optim.allow_frozen_random=True if this is intended"
        )
