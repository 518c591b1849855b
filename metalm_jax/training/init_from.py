"""`init` entries of a run config: start sub-trees of a new run from pretrained weights.

Each entry names a source and what it provides:
  {"format": "hf_bert", "source": "minilm"}              -> text_encoder
  {"format": "hf_gpt2", "source": "/models/gpt2"}         -> embed, pos_embed, decoder
  {"format": "hf_clip_vision" | "hf_vit", "source": ...}  -> vision_encoder
  {"format": "orbax", "source": "runs/other", "target": "connector", "source_key": "connector"}
      an earlier run's workdir (latest step) or one of its checkpoints/<step> directories

Orbax sources are read params-only (training/checkpoint.read_params: the named sub-tree alone, its
digests verified), from the step the checkpoint door offers (checkpoint.readable_steps: the
newest step whose files match their manifest); this module sits in training/ because it reads
checkpoints. Applied once, to a freshly initialised state (a resumed run keeps its own
weights). The optimizer state needs no change (Adam's moments start at zero either way).
Before anything is replaced every entry is converted and checked: architecture keys against
the config (check_arch), every array against the target's shape (fit_tree). The console
then lists, per entry, what was loaded (arrays, parameters), which source keys were dropped on
purpose and why, which were unused, and which top-level modules stayed freshly initialised.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from etils import epath

from metalm_jax import paths
from metalm_jax.convert import check_arch, load_hf
from metalm_jax.convert.common import ConversionError, fit_tree, flatten
from metalm_jax.training import checkpoint

# Config keys that define a stack's function; compared between an Orbax source run and this one.
ARCH_KEYS = (
    "num_layers", "d_model", "num_heads", "d_ff", "norm", "positions", "rel_bias", "activation",
    "ln_eps", "embed_norm", "embed_scale", "final_norm", "embed_dim", "vocab_size", "experts",
    "patch_size", "class_token", "text_prefix", "tokenizer",
)  # fmt: skip
SECTIONS = {  # top-level module -> its config section
    "text_encoder": "text_encoder",
    "decoder": "decoder",
    "vision_encoder": "vision",
}


def _entries(cfg) -> list[dict]:
    out = []
    for i, e in enumerate(cfg.init):
        e = dict(e)
        if "format" not in e or "source" not in e:
            raise ConversionError(f"init[{i}]: needs 'format' and 'source' keys, got {sorted(e)}")
        out.append(e)
    return out


def orbax_checkpoint_dir(source: str, log=print) -> str:
    """A run's workdir (its newest readable step: checkpoint.readable_steps, damaged steps
    said in one line each) or a checkpoints/<step> directory (damaged: an error) -> the step
    directory."""
    source = paths.shown(source)  # absolute if local; a URL (gs://...) as it is
    ckpts = epath.Path(source) / "checkpoints"
    if ckpts.is_dir():
        if not checkpoint.step_numbers(ckpts):
            raise ConversionError(f"{ckpts}: no checkpoints")
        chosen = next(checkpoint.readable_steps(ckpts, log), None)
        if chosen is None:
            raise ConversionError(f"{ckpts}: no intact checkpoint (each damaged step said above)")
        return os.fspath(ckpts / str(chosen.step))
    if (epath.Path(source) / "state").is_dir():
        _check_step_dir(source)
        return source
    raise ConversionError(
        f"{source}: neither a run workdir with checkpoints/ nor a checkpoint step directory"
    )


def _check_step_dir(step_dir: str) -> None:
    """A step directory named by hand must be intact (or predate manifests)."""
    path = epath.Path(step_dir)
    if not path.name.isdigit():
        raise ConversionError(
            f"{step_dir}: expected a run workdir or one of its checkpoints/<step> directories"
        )
    v = checkpoint.verdict(os.fspath(path.parent), int(path.name))
    if v.status in ("damaged", "unfinished"):
        raise ConversionError(v.line)


def orbax_param_metadata(step_dir: str) -> dict:
    """{top-level module: array metadata tree} of an Orbax TrainState checkpoint (nothing read)."""
    with checkpoint.StepReader(step_dir) as reader:
        return reader.param_metadata()


def orbax_saved_config(step_dir: str) -> dict:
    """The run config saved with an Orbax checkpoint step, as a dict."""
    with checkpoint.StepReader(step_dir) as reader:
        return reader.config()


def _orbax_params(step_dir: str, key: str) -> dict:
    """params/<key> of an Orbax TrainState checkpoint, as numpy: a params-only partial restore
    of that sub-tree alone (training/checkpoint.StepReader), its digests verified."""
    with checkpoint.StepReader(step_dir) as reader:
        params = reader.param_metadata()
        if key not in params:
            raise ConversionError(f"{step_dir}/state: no params/{key} (it has {sorted(params)})")
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), params[key]
        )
        restored = reader.params({key: target})
    return jax.tree.map(np.asarray, restored[key])


def _check_orbax_arch(cfg, step_dir: str, target: str, source_key: str) -> None:

    section = SECTIONS.get(target)
    if section is None or SECTIONS.get(source_key) != section:
        return
    saved = orbax_saved_config(step_dir)["model"][section]
    mine = cfg.model[section]
    diffs = [
        f"model.{section}.{k}: source {saved[k]!r}, config {mine[k]!r}"
        for k in ARCH_KEYS
        if k in saved and k in mine and saved[k] != mine[k]
    ]
    if diffs:
        raise ConversionError(f"{step_dir} does not match this config: " + "; ".join(diffs))


def _convert(cfg, i: int, entry: dict, log=print):
    """-> ({top-level name: nested numpy tree}, {name: {path: source key}}, report lines)."""
    fmt, source = entry["format"], entry["source"]
    if fmt == "orbax":
        step_dir = orbax_checkpoint_dir(source, log)
        target = entry.get("target")
        if not target:
            raise ConversionError(f"init[{i}]: format orbax needs a 'target' (e.g. text_encoder)")
        key = entry.get("source_key", target)
        _check_orbax_arch(cfg, step_dir, target, key)
        tree = _orbax_params(step_dir, key)
        src = f"{step_dir} params/{key}"
        sources = {p: f"{key}/{p}" for p in flatten(tree)}
        return {target: tree}, {target: sources}, [f"init[{i}] {target} <- orbax {src}"]
    conv = load_hf(fmt, source)
    check_arch(cfg, conv)
    params, sources = conv.params, conv.sources
    if entry.get("target"):
        if entry["target"] not in params:
            raise ConversionError(
                f"init[{i}]: {fmt} provides {sorted(params)}, not {entry['target']!r}"
            )
        params = {entry["target"]: params[entry["target"]]}
    lines = [f"init[{i}] {', '.join(params)} <- {fmt} {conv.path}"]
    if "embed" in params:
        lines.append(_tokenizer_note(cfg, conv.path))
    if conv.dropped:
        why: dict[str, list] = {}
        for k, reason in conv.dropped.items():
            why.setdefault(reason, []).append(k)
        for reason, keys in why.items():
            lines.append(f"    dropped {len(keys)} source key(s), {reason}: {_short(keys)}")
    lines.append(
        f"    unused source keys ({len(conv.unused)}): {_short(conv.unused)}"
        if conv.unused
        else "    every other source key was used"
    )
    return params, sources, lines


def _tokenizer_note(cfg, source: str) -> str:
    """Which ids meet the imported token embeddings (data/tokenizer.configured_path)."""
    from metalm_jax.data.tokenizer import configured_path

    path = configured_path(cfg.data.tokenizer_path, cfg.init)
    own = os.path.join(source, "tokenizer.json")
    if path and os.path.isfile(own) and os.path.samefile(path, own):
        return f"    tokenizer: the source's own {own}"
    if path:
        return (
            f"    note: the decoder reads data.tokenizer_path {path}: its ids must be the "
            "source's, which index the imported token embeddings"
        )
    return (
        "    note: the decoder reads a SentencePiece tokenizer of this run, not the source's own "
        "(it has no tokenizer.json: set data.tokenizer_path): its token embeddings meet other ids"
    )


def _short(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def _to_global(tree, shardings):
    """numpy tree (or array) -> global jax arrays in the target shardings (works on many
    hosts: each process fills only its addressable shards)."""
    return jax.tree.map(
        lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx]),
        tree,
        shardings,
    )


def apply_init(cfg, params: dict, abstract_params: dict, shardings: dict, log=print) -> dict:
    """`params` (a fresh state's) with the sub-trees named by `cfg.init` replaced, placed in
    `shardings` (the parameters' shardings, as `abstract_params` is shaped); logs what was
    loaded. training/start.py calls it, for a fresh state only."""
    entries = _entries(cfg)
    if not entries:
        return params
    fitted, report = {}, []
    for i, entry in enumerate(entries):
        trees, sources, lines = _convert(cfg, i, entry, log)
        for name, tree in trees.items():
            if name not in abstract_params:
                raise ConversionError(
                    f"init[{i}]: this model has no {name!r} (its top-level modules: "
                    f"{sorted(abstract_params)}); is the matching encoder enabled in the config?"
                )
            if name in fitted:
                raise ConversionError(f"init[{i}]: {name!r} is already loaded by an earlier entry")
            fitted[name] = fit_tree(tree, abstract_params[name], name, sources.get(name))
            n = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(fitted[name]))
            lines.append(f"    {name}: {len(jax.tree.leaves(fitted[name]))} arrays, {n / 1e6:.2f}M")
        report += lines
    params = dict(params)
    for name, tree in fitted.items():
        params[name] = _to_global(tree, shardings[name])
    fresh = sorted(set(abstract_params) - set(fitted))
    report.append(f"init: freshly initialised: {', '.join(fresh) if fresh else 'nothing'}")
    for line in report:
        log(line)
    return params
