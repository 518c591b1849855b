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

import contextlib
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


def orbax_config_and_metadata(step_dir: str, log=print) -> tuple[dict, dict]:
    """(the run config saved with an Orbax checkpoint step, as a dict; {top-level module: array
    metadata tree} of its parameters), through one reader; no array is read."""
    with checkpoint.StepReader(step_dir, log) as reader:
        return reader.config(), reader.param_metadata()


class _OrbaxSources:
    """The Orbax entries of one `init` list, read per step directory: each source resolved and
    its step checked once (a workdir's newest intact step, or a named step directory), one
    StepReader per step (metadata and config read once), and every sub-tree wanted from a step
    restored by one params-only partial restore."""

    def __init__(self, log=print):
        self.log = log
        self.step_dirs: dict[str, str] = {}  # source -> step directory
        self.readers: dict[str, checkpoint.StepReader] = {}
        self.wanted: dict[int, tuple[str, str, str]] = {}  # entry -> (step dir, target, key)
        self.trees: dict[tuple[str, str], dict] = {}  # (step dir, key) -> numpy tree
        self._open = contextlib.ExitStack()  # the readers, closed on exit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._open.close()

    def reader(self, step_dir: str) -> checkpoint.StepReader:
        if step_dir not in self.readers:
            reader = checkpoint.StepReader(step_dir, self.log)
            self.readers[step_dir] = self._open.enter_context(reader)
        return self.readers[step_dir]

    def want(self, cfg, i: int, entry: dict) -> None:
        """Checks entry i (its step, target, architecture, that the step has the sub-tree) and
        notes what to read; nothing is restored yet."""
        source = entry["source"]
        if source not in self.step_dirs:
            self.step_dirs[source] = orbax_checkpoint_dir(source, self.log)
        step_dir = self.step_dirs[source]
        target = entry.get("target")
        if not target:
            raise ConversionError(f"init[{i}]: format orbax needs a 'target' (e.g. text_encoder)")
        key = entry.get("source_key", target)
        _check_orbax_arch(cfg, self.reader(step_dir), target, key)
        params = self.reader(step_dir).param_metadata()
        if key not in params:
            raise ConversionError(f"{step_dir}/state: no params/{key} (it has {sorted(params)})")
        self.wanted[i] = (step_dir, target, key)

    def read(self) -> None:
        """One partial restore per step directory, of every sub-tree wanted from it (as numpy;
        digests verified by StepReader.params)."""
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        by_step: dict[str, set[str]] = {}
        for step_dir, _, key in self.wanted.values():
            by_step.setdefault(step_dir, set()).add(key)
        for step_dir, keys in by_step.items():
            reader = self.reader(step_dir)
            meta = reader.param_metadata()
            target = {
                k: jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta[k]
                )
                for k in sorted(keys)
            }
            restored = reader.params(target)
            for k in keys:
                self.trees[step_dir, k] = jax.tree.map(np.asarray, restored[k])

    def converted(self, i: int):
        """Entry i as _convert returns it (after read)."""
        step_dir, target, key = self.wanted[i]
        tree = self.trees[step_dir, key]
        sources = {p: f"{key}/{p}" for p in flatten(tree)}
        line = f"init[{i}] {target} <- orbax {step_dir} params/{key}"
        return {target: tree}, {target: sources}, [line]


def _check_orbax_arch(cfg, reader: checkpoint.StepReader, target: str, source_key: str) -> None:
    section = SECTIONS.get(target)
    if section is None or SECTIONS.get(source_key) != section:
        return
    saved = reader.config()["model"][section]
    mine = cfg.model[section]
    diffs = [
        f"model.{section}.{k}: source {saved[k]!r}, config {mine[k]!r}"
        for k in ARCH_KEYS
        if k in saved and k in mine and saved[k] != mine[k]
    ]
    if diffs:
        raise ConversionError(f"{reader.step_dir} does not match this config: " + "; ".join(diffs))


def _convert(cfg, i: int, entry: dict):
    """A Hugging Face entry -> ({top-level name: nested numpy tree}, {name: {path: source key}},
    report lines); Orbax entries are read by _OrbaxSources."""
    fmt, source = entry["format"], entry["source"]
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
    with _OrbaxSources(log) as orbax:
        for i, entry in enumerate(entries):
            if entry["format"] == "orbax":
                orbax.want(cfg, i, entry)
        orbax.read()
    for i, entry in enumerate(entries):
        if i in orbax.wanted:
            trees, sources, lines = orbax.converted(i)
        else:
            trees, sources, lines = _convert(cfg, i, entry)
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
