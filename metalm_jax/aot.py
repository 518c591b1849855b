"""Compile the real train step for a TPU topology on this (CPU) machine and report memory,
FLOPs and an estimated MFU: `python -m metalm_jax.aot --config configs/metalm_lm.py
--topology v5p-128 [--config.a.b=v]`. Needs the `tpu` extra (libtpu).

Topology names: `v5p-128` style (v4 / v5p count TensorCores, two per chip; v5e / v6e count
chips) or the compiler's own `v5p:4x4x4`. Reported per chip: arguments (params, optimizer state,
batch), temporaries and the compiler's peak, against the chip's HBM. FLOPs per step are the
explicit model count (model/build.py); the compiler's own count and `optimal_seconds` are shown
too, with their caveats: XLA counts a scanned loop body once (layers, or the microbatches of
gradient accumulation, which are multiplied back in), so for a config that scans its layers
the CLI compiles an unrolled copy as well and takes the estimate from it (`--noestimate` skips
that: ~13 minutes for the paper config on 2 cores); on v5e / v6e optimal_seconds can come out
negative, so the estimated MFU is only printed where it is meaningful. The estimate is the
compiler's roofline (optimal_seconds), not a measured step: see benchmarks/RESULTS.md for
where it is blind.
The Pallas kernels in the compiled program are listed by name (the splash attention kernels
of model.attention = splash | auto: forward, dq and dkv per attention layer).
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import jax
import numpy as np

from metalm_jax.model.build import dummy_batch, image_layout, step_flops
from metalm_jax.parallel.chips import CHIPS, TPU_GENERATIONS


def _grid(chips: int, dims: int) -> str:
    """Chips -> the most cube-like power-of-two grid, e.g. 64 -> 4x4x4 (3-D) or 8x8 (2-D)."""
    if chips & (chips - 1):
        raise ValueError(f"{chips} chips: only powers of two are supported")
    shape = [1] * dims
    for i in range(int(math.log2(chips))):
        shape[dims - 1 - (i % dims)] *= 2
    return "x".join(map(str, sorted(shape)))


def parse_topology(name: str) -> tuple[str, str, int]:
    """'v5p-128' -> ('v5p:4x4x4', 'v5p', 64 chips); 'v5p:4x4x4' is taken as it is."""
    gens = "|".join(TPU_GENERATIONS)
    m = re.fullmatch(rf"({gens})-(\d+)", name)
    if m:
        gen, n = m.group(1), int(m.group(2))
        chip = CHIPS[gen]
        chips = n // chip.cores_per_chip
        return f"{gen}:{_grid(chips, chip.torus_dims)}", gen, chips
    m = re.fullmatch(rf"({gens}):([0-9x]+)", name)
    if m:
        return name, m.group(1), int(np.prod([int(x) for x in m.group(2).split("x")]))
    raise ValueError(f"--topology {name!r}: use e.g. v5p-128, v5e-64, v6e-64, v4-128 or v5p:4x4x4")


def pallas_kernels(hlo: str) -> dict[str, int]:
    """Attention kernel names in compiled HLO text -> how many tpu_custom_calls run them (each
    call is attributed to the first splash / flash kernel name that follows it; "other" for
    Pallas calls without one)."""
    counts: dict[str, int] = {}
    calls = [
        m.start()
        for m in re.finditer(r'custom_call_target="tpu_custom_call"|@tpu_custom_call\b', hlo)
    ]
    for i, start in enumerate(calls):
        end = calls[i + 1] if i + 1 < len(calls) else len(hlo)
        name = re.search(r"\b(splash_mha_\w+|splash_mqa_\w+|flash_attention\w*)", hlo[start:end])
        key = name.group(1) if name else "other"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _kernels(compiled, lowered) -> dict[str, int] | str:
    """pallas_kernels of the compiled program; where libtpu cannot print it (0.0.52 fails on
    the paper configs: an async-update instruction's operand count), those of the lowered
    program, before XLA's passes (a string saying so, with the counts)."""
    try:
        return pallas_kernels(compiled.as_text())
    except Exception as e:  # noqa: BLE001 -- the report must not die on its last line
        why = str(e).splitlines()[0][:100]
    try:
        found = pallas_kernels(lowered.as_text())
    except Exception:  # noqa: BLE001
        return f"unknown (HLO text unavailable: {why})"
    return (
        f"{_listed(found)} (kernels defined in the lowered program, not per layer: the "
        f"compiled HLO text is unavailable: {why})"
    )


def _listed(kernels: dict[str, int]) -> str:
    return ", ".join(f"{n} x{c}" for n, c in sorted(kernels.items())) or "none"


def _scanned(cfg) -> bool:
    return bool(cfg.model.decoder.scan or cfg.model.text_encoder.scan or cfg.model.vision.scan)


def unrolled_copy(cfg):
    """`cfg` with every stack unrolled: the same step, but one the cost model counts whole."""
    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        for stack in (cfg.model.decoder, cfg.model.text_encoder, cfg.model.vision):
            stack.scan = False
    return cfg


def compile_for_topology(
    cfg, topology: str, unrolled_estimate: bool = False, log=lambda msg: None
) -> dict:
    """Lowers and compiles the train step for `topology`; returns the report as a dict.

    With `unrolled_estimate`, a config that scans its layers is compiled a second time with
    them unrolled, for the FLOPs and step-time estimate the scanned program hides (its memory
    figures stay those of the program as configured); the report says which program the
    estimate came from and how long that compile took."""
    report = _compile(cfg, topology)
    if unrolled_estimate and _scanned(cfg):
        log(
            "the config scans its layers, which the cost model counts once: compiling an "
            "unrolled copy for the estimate (the v5p-128 paper config: ~13 min on 2 cores)"
        )
        t0 = time.perf_counter()
        copy = _compile(unrolled_copy(cfg), topology)
        report["estimate_from"] = (
            f"an unrolled copy (compiled in {time.perf_counter() - t0:.0f} s, "
            f"peak {copy['peak_bytes'] / 2**30:.2f} GiB)"
        )
        for k in (
            "compiler_flops_per_device",
            "compiler_bytes_per_device",
            "optimal_seconds",
            "estimated_step_seconds",
            "estimated_mfu",
        ):
            report[k] = copy[k]
    return report


def _compile(cfg, topology: str) -> dict:
    # Compiling touches no chip, so several compiles (or a test beside a running compile) may
    # load libtpu at once; without this the second one fails on libtpu's lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer

    compiler_name, gen, chips = parse_topology(topology)
    kwargs = {"chip_config_name": "megacore"} if gen == "v4" else {}
    topo = topologies.get_topology_desc(platform="tpu", topology_name=compiler_name, **kwargs)
    devices = topo.devices
    mesh = make_mesh(cfg.mesh.shape, devices)
    trainer = build_trainer(cfg, mesh)
    example = dummy_batch(
        cfg.train.batch_size,
        cfg.data.seq_len,
        cfg.spans.enc_length,
        image_layout(cfg, trainer.model.cfg),
    )
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=trainer.batch_sharding), example
    )
    with jax.set_mesh(mesh):
        lowered = trainer.step.lower(trainer.abstract_state, abstract_batch)
        compiled = lowered.compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    hbm, peak = CHIPS[gen].hbm_bytes, CHIPS[gen].peak_flops
    n_dev = len(devices)
    flops = step_flops(cfg, trainer.model.cfg)
    peak_mem = getattr(mem, "peak_memory_in_bytes", 0) or (
        mem.argument_size_in_bytes
        + mem.temp_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    optimal = float(cost.get("optimal_seconds", float("nan")))
    scanned = _scanned(cfg)
    # Gradient accumulation is a lax.scan too: the cost covers one microbatch, and every
    # microbatch is the same computation, so the step is `accum` of them.
    accum = int(cfg.train.grad_accum_steps)
    step_seconds = optimal * accum
    mfu = flops["total"] / (chips * peak * step_seconds) if optimal > 0 and not scanned else None
    largest = sorted(
        (
            (
                int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize,
                jax.tree_util.keystr(p),
            )
            for p, x in jax.tree_util.tree_leaves_with_path(trainer.abstract_state)
        ),
        reverse=True,
    )[:5]
    return {
        "topology": topology,
        "compiler_topology": compiler_name,
        "devices": n_dev,
        "chips": chips,
        "mesh": dict(mesh.shape),
        "argument_bytes": mem.argument_size_in_bytes,
        "temp_bytes": mem.temp_size_in_bytes,
        "output_bytes": mem.output_size_in_bytes,
        "alias_bytes": mem.alias_size_in_bytes,
        "peak_bytes": peak_mem,
        "hbm_bytes": hbm,
        "fits": peak_mem <= hbm,
        "model_flops_per_step": flops["total"],
        "compiler_flops_per_device": float(cost.get("flops", float("nan"))),
        "compiler_bytes_per_device": float(cost.get("bytes accessed", float("nan"))),
        "optimal_seconds": optimal,
        "grad_accum_steps": accum,
        "estimated_step_seconds": step_seconds if optimal > 0 and not scanned else None,
        "estimated_mfu": mfu,
        "largest_state_buffers": largest,
        "pallas_kernels": _kernels(compiled, lowered),
    }


def format_report(r: dict) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    lines = [
        f"topology {r['topology']} ({r['compiler_topology']}): {r['chips']} chips, "
        f"{r['devices']} devices, mesh {r['mesh']}",
        f"per device: arguments {gib(r['argument_bytes'])}, temporaries {gib(r['temp_bytes'])}, "
        f"outputs {gib(r['output_bytes'])} (aliased {gib(r['alias_bytes'])})",
        f"peak {gib(r['peak_bytes'])} of {gib(r['hbm_bytes'])} HBM: "
        + ("fits" if r["fits"] else "DOES NOT FIT"),
        f"model FLOPs/step {r['model_flops_per_step']:.3e}; compiler FLOPs/device "
        f"{r['compiler_flops_per_device']:.3e}, bytes accessed/device "
        f"{r.get('compiler_bytes_per_device', float('nan')):.3e}; "
        f"optimal_seconds {r['optimal_seconds']:.4f}"
        + (f" per microbatch x {r['grad_accum_steps']}" if r["grad_accum_steps"] > 1 else ""),
        "estimated MFU "
        + (
            f"{100 * r['estimated_mfu']:.1f}% (step {r['estimated_step_seconds']:.3f} s)"
            if r["estimated_mfu"] is not None
            else "n/a (scanned layers or no positive optimal_seconds)"
        )
        + (f", from {r['estimate_from']}" if r.get("estimate_from") else ""),
    ]
    kernels = r.get("pallas_kernels") or {}
    if isinstance(kernels, str):
        lines.append(f"Pallas kernels: {kernels}")
    else:
        lines.append(f"Pallas kernels: {_listed(kernels)}")
    if not r["fits"]:
        lines.append("largest state buffers per device:")
        lines += [f"  {gib(b)}  {p}" for b, p in r["largest_state_buffers"]]
    return "\n".join(lines)


def main(argv):
    from absl import flags

    del argv
    t0 = time.perf_counter()
    report = compile_for_topology(
        flags.FLAGS.config,
        flags.FLAGS.topology,
        unrolled_estimate=flags.FLAGS.estimate,
        log=lambda msg: print(msg, flush=True),
    )
    report["compile_seconds"] = time.perf_counter() - t0
    print(format_report(report), flush=True)
    if flags.FLAGS.json:
        with open(flags.FLAGS.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "experiment config", lock_config=True)
    flags.DEFINE_string("topology", "v5p-128", "TPU topology, e.g. v5p-128, v5e-64, v6e-64")
    flags.DEFINE_string("json", None, "also write the report as JSON to this path")
    flags.DEFINE_bool(
        "estimate",
        True,
        "when the config scans its layers, compile an unrolled copy too for the step-time and "
        "MFU estimate (--noestimate: memory and the scanned program only)",
    )
    flags.mark_flags_as_required(["config"])
    app.run(main)
