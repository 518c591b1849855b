"""Run in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the caller): one train
step of the micro model on the same global batch over several meshes; prints JSON with the
relative differences against the (1, 1, 1) mesh: loss, all parameters (L2), worst single leaf."""

import json
import sys

import jax
import numpy as np

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.parallel.mesh import make_mesh
from metalm_jax.training.trainer import build_trainer

SHAPES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2)]
# the scanned decoder on the reference and the mesh with every axis > 1 (CI time: each mesh
# compiles its own init and step)
SCAN_SHAPES = [(1, 1, 1), (2, 2, 2)]


def run(shape, cfg, batch):
    n = int(np.prod(shape))
    mesh = make_mesh(shape, jax.devices()[:n])
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        state = trainer.init(jax.random.key(0))
        state, m = trainer.step(state, trainer.global_batch(batch))
        state, m = trainer.step(state, trainer.global_batch(batch))  # step 0 has LR 0
    loss = float(m["loss_sum"] / m["weight"])
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    return loss, [(jax.tree_util.keystr(p), np.asarray(x)) for p, x in leaves]


def main():
    cfg = testing.micro_config()
    cfg.model.decoder.scan = "--scan" in sys.argv
    cfg.train.batch_size = 8
    batch = testing.random_batch(8, 64, cfg.data.vocab_size, SpanConfig(4, 8, 0.25, 24))
    shapes = SCAN_SHAPES if cfg.model.decoder.scan else SHAPES
    ref_loss, ref_params = run(shapes[0], cfg, batch)
    out = {"devices": jax.device_count(), "ref_loss": ref_loss, "meshes": {}}
    for shape in shapes[1:]:
        loss, params = run(shape, cfg, batch)
        rel, worst = max(
            (float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)), name)
            for (name, a), (_, b) in zip(ref_params, params, strict=True)
        )
        a = np.concatenate([x.ravel() for _, x in ref_params])
        b = np.concatenate([x.ravel() for _, x in params])
        out["meshes"][str(shape)] = {
            "loss_rel": abs(loss - ref_loss) / ref_loss,
            "param_rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
            "leaf_rel_max": rel,
            "worst_leaf": worst,
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
