"""Single-process reference for the 2-process test (run with 8 simulated devices).

Rebuilds exactly the global batches the 2-process run fed (process 0's shard rows first, then
process 1's), trains the same number of steps on one 8-device mesh, restores the 2-process run's
final checkpoint and prints the largest relative parameter difference."""

import json
import sys

import jax
import numpy as np

from metalm_jax.data.feed import pipeline
from metalm_jax.model.build import derive
from metalm_jax.parallel.mesh import make_mesh
from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.trainer import build_trainer
from tests.micro_config import get_config


def main(config_arg, workdir, steps):
    cfg = get_config(config_arg)
    cfg.train.steps = steps
    cfg.train.batch_size = 8
    cfg.optim.schedule = "constant"
    tok = pipeline.build_tokenizer(cfg, workdir)  # the file process 0 trained
    local = cfg.train.batch_size // 2
    fmt = derive(cfg, tok).rows
    iters = [pipeline.train_iterator(cfg, tok, local, fmt, (i, 2)) for i in range(2)]
    mesh = make_mesh(cfg.mesh.shape)
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        state = trainer.init(jax.random.key(cfg.seed))
        for _ in range(steps):
            parts = [next(it) for it in iters]
            batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            state, m = trainer.step(state, trainer.global_batch(batch))
        ckpt = Checkpointer(workdir, 0, 3)
        restored = ckpt.restore(steps, trainer.abstract_state, None, cfg.to_dict())
        ckpt.close()
    ref = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    got = jax.tree.leaves(jax.device_get(restored.params))
    rel, worst = max(
        (float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)), jax.tree_util.keystr(p))
        for (p, a), b in zip(ref, got, strict=True)
    )
    a = np.concatenate([np.ravel(x) for _, x in ref])
    b = np.concatenate([np.ravel(x) for x in got])
    l2 = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    out = {"param_rel_l2": l2, "leaf_rel_max": rel, "worst_leaf": worst, "step": int(restored.step)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
