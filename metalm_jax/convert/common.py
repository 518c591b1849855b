"""Reading Hugging Face checkpoints without torch, and fitting converted trees to our modules.

`HFCheckpoint` opens a model directory (config.json + model.safetensors, or sharded
model-0000x-of-0000y.safetensors with their index) or a single .safetensors file through the
`safetensors` numpy API, and records which source keys a converter read, which it dropped on
purpose (with the reason) and which it never touched, so every conversion can report them.

Converters build nested dicts in our parameter layout (unrolled layers `layers_<i>`);
`fit_tree` checks them against the abstract parameters of the target module, stacks layers for
scanned stacks (`layers` with a leading layer axis), and raises `ConversionError` naming the
target path, the source key and both shapes on any mismatch.
"""

from __future__ import annotations

import difflib
import json
import os
import re

import numpy as np

from metalm_jax.types import UserError

# Buffers some checkpoints store that are not weights (position id ranges, attention masks).
BUFFER_PATTERNS = (
    r"(^|\.)position_ids$",
    r"(^|\.)token_type_ids$",
    r"(^|\.)attn\.bias$",
    r"(^|\.)attn\.masked_bias$",
)


class ConversionError(UserError, ValueError):
    """A checkpoint that does not fit the target: names the key(s) and the shapes."""


class HFCheckpoint:
    """Tensors of a Hugging Face checkpoint as float32 numpy arrays, with key bookkeeping."""

    def __init__(self, path: str):
        from safetensors import safe_open

        path = os.fspath(path)
        if os.path.isdir(path):
            files = sorted(
                os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors")
            )
            config_path = os.path.join(path, "config.json")
        elif path.endswith(".safetensors") and os.path.isfile(path):
            files = [path]
            config_path = os.path.join(os.path.dirname(path), "config.json")
        else:
            raise ConversionError(
                f"{path}: not a model directory or a .safetensors file (need model.safetensors "
                "and config.json from a Hugging Face model; convert .bin checkpoints to "
                "safetensors first)"
            )
        if not files:
            raise ConversionError(f"{path}: no .safetensors file in this directory")
        self.path = path
        self.config = {}
        if os.path.exists(config_path):
            with open(config_path) as f:
                self.config = json.load(f)
        # image models: the processor's pixel normalization (image_mean / image_std), if shipped
        self.preprocessor = {}
        pre_path = os.path.join(os.path.dirname(config_path), "preprocessor_config.json")
        if os.path.exists(pre_path):
            with open(pre_path) as f:
                self.preprocessor = json.load(f)
        self._where = {}  # key -> the open file holding it (opened once, read lazily)
        for file in files:
            handle = safe_open(file, "np")
            for key in handle.keys():
                self._where[key] = handle
        self.used: set[str] = set()
        self.dropped: dict[str, str] = {}

    def keys(self) -> list[str]:
        return sorted(self._where)

    def has(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str, shape: tuple | None = None) -> np.ndarray:
        """The tensor `key` as float32. With `shape` (for a tensor that is split or reshaped
        next, where a wrong shape would fail obscurely or not at all), a different shape is a
        ConversionError naming the key and both shapes."""
        if key not in self._where:
            near = difflib.get_close_matches(key, self._where, n=3)
            raise ConversionError(
                f"{self.path}: key {key!r} not found"
                + (f" (closest: {', '.join(near)})" if near else "")
            )
        self.used.add(key)
        value = np.asarray(self._where[key].get_tensor(key), dtype=np.float32)
        if shape is not None and value.shape != tuple(shape):
            raise ConversionError(
                f"{self.path}: {key}: source shape {value.shape}, the config.json implies "
                f"{tuple(shape)}"
            )
        return value

    def drop(self, key: str, why: str) -> None:
        """Marks a key as deliberately not used (reported with the reason)."""
        if key in self._where:
            self.dropped[key] = why

    def unused(self) -> list[str]:
        """Source keys neither read nor dropped, buffers excluded."""
        return [
            k
            for k in self.keys()
            if k not in self.used
            and k not in self.dropped
            and not any(re.search(p, k) for p in BUFFER_PATTERNS)
        ]

    def prefix(self, probe: str, candidates: tuple[str, ...]) -> str:
        """The first candidate prefix p with p + probe in the checkpoint."""
        for p in candidates:
            if self.has(p + probe):
                return p
        raise ConversionError(
            f"{self.path}: no key like {[p + probe for p in candidates]}; is this the right "
            f"format? first keys: {self.keys()[:5]}"
        )


def set_path(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}/{k}" if prefix else k))
    return out


def _stack_layers(tree):
    """{'layers_0': t0, 'layers_1': t1, ...} -> {'layers': stacked} (for scanned stacks)."""
    if not isinstance(tree, dict):
        return tree
    tree = {k: _stack_layers(v) for k, v in tree.items()}
    numbered = sorted((int(m.group(1)), k) for k in tree if (m := re.fullmatch(r"layers_(\d+)", k)))
    if numbered:
        import jax

        layers = [tree.pop(k) for _, k in numbered]
        tree["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    return tree


def fit_tree(converted: dict, abstract: dict, where: str, sources: dict | None = None) -> dict:
    """Checks `converted` (nested dict of arrays) against `abstract` (same layout, leaves with
    .shape) and returns it as float32 numpy, layers stacked where the target is scanned.

    Raises ConversionError naming every missing or extra path and every shape mismatch
    (target path, source key from `sources`, both shapes). A target that is a single array (a
    top-level parameter such as the decoder's learned `pos_embed`) takes an array, returned as
    one; its path is "" (TreeBuilder.put("", ...)).
    """
    at = lambda path: f"{where}/{path}" if path else where
    flat_abs = flatten(abstract)
    if any(re.search(r"(^|/)layers(/|$)", k) for k in flat_abs):
        converted = _stack_layers(converted)
    flat = flatten(converted)
    sources = sources or {}
    problems = []
    for path, leaf in flat_abs.items():
        if path not in flat:
            problems.append(f"{at(path)}: expected {tuple(leaf.shape)}, the source has none")
            continue
        got = np.shape(flat[path])
        if tuple(got) != tuple(leaf.shape):
            src = sources.get(path, "?")
            problems.append(
                f"{at(path)} <- {src}: source shape {tuple(got)}, target shape {tuple(leaf.shape)}"
            )
    for path in flat:
        if path not in flat_abs:
            problems.append(f"{at(path)} <- {sources.get(path, '?')}: no such target parameter")
    if problems:
        raise ConversionError(
            f"{len(problems)} mismatch(es) converting into {where}:\n  " + "\n  ".join(problems)
        )
    if not isinstance(abstract, dict):
        return np.asarray(converted, np.float32)
    out = {}
    for path, value in flat.items():
        set_path(out, path, np.asarray(value, np.float32))
    return out


class TreeBuilder:
    """Collects converted arrays at our paths, remembering each one's source key."""

    def __init__(self, ckpt: HFCheckpoint):
        self.ckpt = ckpt
        self.tree: dict = {}
        self.sources: dict[str, str] = {}

    def put(self, path: str, value, source: str) -> None:
        """Stores `value` at `path`; path "" makes the whole tree this one array."""
        if path:
            set_path(self.tree, path, np.asarray(value, np.float32))
        else:
            self.tree = np.asarray(value, np.float32)
        self.sources[path] = source

    def linear_in(self, path: str, key: str, heads: int | None = None, bias=True):
        """torch Linear `key` (weight [out, in]) as our kernel [in, out] (or [in, N, H])."""
        w = self.ckpt.get(key + ".weight").T
        if heads:
            w = w.reshape(w.shape[0], heads, -1)
        self.put(path, w, key + ".weight")
        if bias:
            b = self.ckpt.get(key + ".bias")
            self.put(path + "_bias", b.reshape(heads, -1) if heads else b, key + ".bias")

    def linear_out(self, path: str, key: str, heads: int):
        """torch Linear (weight [D, N*H]) as our attention output kernel [N, H, D] + bias."""
        w = self.ckpt.get(key + ".weight").T
        self.put(path, w.reshape(heads, -1, w.shape[-1]), key + ".weight")
        self.put(path + "_bias", self.ckpt.get(key + ".bias"), key + ".bias")

    def norm(self, path: str, key: str, scale="weight", bias="bias"):
        self.put(path + "/scale", self.ckpt.get(f"{key}.{scale}"), f"{key}.{scale}")
        self.put(path + "/bias", self.ckpt.get(f"{key}.{bias}"), f"{key}.{bias}")


HF_ACTIVATIONS = {  # Hugging Face hidden_act -> ours
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def activation(name: str, where: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise ConversionError(
            f"{where}: hidden activation {name!r} is not supported (known: "
            f"{sorted(HF_ACTIVATIONS)})"
        )
    return HF_ACTIVATIONS[name]
