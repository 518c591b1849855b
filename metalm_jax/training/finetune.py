"""Finetuning from a pretraining run: the config it resolves to, presets, and the frozen check.

`prepare_config(cfg, workdir)` turns a finetuning config (`finetune.from_run` set) into the run
it describes, before anything is built:
  * the model is the source run's (its saved `model` section, plus data.vocab_size and the
    pixel normalization), so a finetune config needs no copy of the pretraining sizes;
  * its tokenizer is copied into the new workdir (the run stays usable if the source goes);
  * `init` gets one Orbax entry per restored top-level module (`finetune.restore`): a
    params-only partial restore, checked leaf by leaf (training/init_from.py); the optimizer and
    step start fresh;
  * the preset (`finetune.preset`) adds its patterns to optim.frozen;
  * a module the source loaded pretrained keeps the source's treatment (finetune.carry_pretrained,
    `pretrained_treatment`): the paper trains only the top two layers of its pretrained encoder,
    at a BERT-scale LR, and a finetune that unfroze all of MiniLM at the decoder's 1e-3 would
    overwrite what made it worth docking;
  * the task's encoder inputs must stay within the encoder positions the source trained
    (`check_positions_trained`): rows past its spans.max_len + <s> were never trained;
  * its spans.min_len / max_len are the source's, so the run's saved config says which
    encoder positions are trained (`trained_encoder_positions`).

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
from metalm_jax.training.optimizer import param_path
from metalm_jax.types import ConfigError

PRESETS = {
    "decoder_frozen": [r"^(embed|pos_embed|decoder)(/|$)"],
    "full": [],
    "connector_only": [r"^(?!(connector|vision_connector)(/|$))"],
    "decoder_only": [r"^(text_encoder|vision_encoder|connector|vision_connector)(/|$)"],
    "none": [],
}

# What each init format loads (training/init_from.py), unless the entry names a target.
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
    from metalm_jax.training.init_from import orbax_checkpoint_dir, orbax_config_and_metadata

    step_dir = orbax_checkpoint_dir(ft.from_run, log)
    saved_config, metadata = orbax_config_and_metadata(step_dir, log)
    saved = with_defaults(saved_config)
    out = cfg.copy_and_resolve_references()
    with out.unlocked():
        out.model = saved.model
        out.data.vocab_size = saved.data.vocab_size
        out.images.enabled = saved.images.enabled
        out.images.mean, out.images.std = saved.images.mean, saved.images.std
        out.spans.enc_bos = saved.spans.enc_bos
        _copy_tokenizer(saved, _run_dir(step_dir), workdir, out)
        have = sorted(metadata)
        wanted = have if "all" in ft.restore else list(ft.restore)
        missing = [m for m in wanted if m not in have]
        if missing:
            raise ConfigError(
                f"finetune.restore: {step_dir} has no params/{missing} (it has {have})"
            )
        init = [dict(format="orbax", source=step_dir, target=m) for m in wanted]
        out.init = init + [dict(e) for e in cfg.init if not set(_targets(e)) & set(wanted)]
        frozen, mults = [], []
        if ft.carry_pretrained:
            names = [m + "/" + param_path(p) for m in wanted
                     for p, _ in jax.tree_util.tree_leaves_with_path(metadata[m])]  # fmt: skip
            frozen, mults = pretrained_treatment(saved, names)
        out.optim.frozen = list(cfg.optim.frozen) + frozen + PRESETS[ft.preset]
        # this config's own multipliers first: the first pattern that matches decides
        out.optim.lr_multipliers = tuple(tuple(x) for x in cfg.optim.lr_multipliers) + tuple(mults)
        out.spans.min_len, out.spans.max_len = saved.spans.min_len, saved.spans.max_len
    if not ft.allow_untrained_positions:
        check_positions_trained(out, trained_encoder_positions(saved), "the source run")
    skipped = [m for m in have if m not in wanted]
    log(
        f"== finetuning from {step_dir}: restoring {', '.join(wanted)}"
        + (f"; not restored: {', '.join(skipped)}" if skipped else "")
        + f"; preset {ft.preset}"
        + (f"; carried from its pretrained modules: frozen {frozen}, lr x {mults}" if frozen
           or mults else "")
    )  # fmt: skip
    return out


def pretrained_treatment(saved, param_names) -> tuple[list[str], list[tuple[str, float]]]:
    """(optim.frozen patterns, optim.lr_multipliers) of the source config `saved` that match
    parameters (of `param_names`, "module/..." paths) and only parameters of modules it loaded
    from a pretrained model (a non-Orbax `init` entry: hf_bert, hf_gpt2, ...): MiniLM's frozen
    lower layers and its BERT-scale LR multiplier carry into the finetune, while the source's
    patterns for what it trained from scratch (or froze at random in a test) do not. One step
    only: the source's own `init` says what was pretrained, so a finetune of a finetune carries
    nothing (its init entries are Orbax ones): set optim.frozen / lr_multipliers there."""
    pretrained = {t for e in saved.init if dict(e).get("format") != "orbax" for t in _targets(e)}

    def only_pretrained(pattern: str) -> bool:
        hits = [n for n in param_names if re.search(pattern, n)]
        return bool(hits) and all(n.split("/")[0] in pretrained for n in hits)

    frozen = [p for p in saved.optim.frozen if only_pretrained(p)]
    mults = [(p, float(m)) for p, m in saved.optim.lr_multipliers if only_pretrained(p)]
    return frozen, mults


def trained_encoder_positions(cfg) -> int | None:
    """How many of the text encoder's learned position rows (0, 1, ...) a run of `cfg` trains
    or inherits trained; None when every row up to model.text_encoder.max_len counts.

    Semi-causal pretraining encodes spans of at most spans.max_len tokens (+ <s>), so the rows
    past that are never trained and keep their random init: an input that reaches them (a
    finetuning input, an in-context prompt) reads noise there. None: no text encoder or no
    learned table; a table loaded from a pretrained model (a non-Orbax `init` entry for
    text_encoder), which trained every row; an encoder with its own tokenizer, whose
    re-tokenized spans are cut to max_len rather than spans.max_len (the one here, MiniLM, is
    loaded pretrained)."""
    e = cfg.model.text_encoder
    if not e.enabled or e.positions != "learned" or e.tokenizer:
        return None
    if any(dict(x).get("format") != "orbax" and "text_encoder" in _targets(x) for x in cfg.init):
        return None
    return min(int(cfg.spans.max_len) + int(cfg.spans.enc_bos), int(e.max_len))


def check_positions_trained(cfg, trained: int | None, source: str) -> None:
    """Raises (one line) when the task's text inputs (task.max_input_tokens + <s>, the longest
    over a mixture's entries) reach text-encoder positions past the `trained` rows of `source`;
    `trained` None (a decoder-only model, a pretrained or re-tokenizing encoder): nothing to
    check."""
    if trained is None or not cfg.task.name:
        return
    from metalm_jax.data.tasks.mixture import entries

    bos = int(cfg.spans.enc_bos)
    from metalm_jax.data.tasks.registry import task_spec

    # an image task's inputs go to the vision encoder (TaskSpec.inputs)
    texts = [t for t in entries(cfg.task) if task_spec(t.name).inputs == "text"]
    if not texts:
        return
    longest = max(int(t.max_input_tokens) for t in texts) + bos
    if longest > trained:
        raise ConfigError(
            f"task.max_input_tokens={longest - bos} (+ <s>) reaches text-encoder positions "
            f"{trained}-{longest - 1}, which {source} never trained (its spans: at most "
            f"spans.max_len={trained - bos} tokens + <s>): lower task.max_input_tokens to "
            f"{trained - bos}, or pretrain with spans.max_len >= {longest - bos}; "
            "finetune.allow_untrained_positions=True reads them at their random init"
        )


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
