"""Load a trained run for inference: its config (or a given one, checked against the checkpoint's
model), tokenizer, model and parameters from the latest (or a named) Orbax checkpoint. Only the
parameters are read (Checkpointer.restore_params): no optimizer is built and no optimizer state
is restored, so the optimizer a run was trained with (e.g. a finetune with a frozen decoder)
does not constrain the config it is evaluated under."""

from __future__ import annotations

import os

from etils import epath

from metalm_jax import paths


def _check_run_dir(workdir: str) -> None:
    """FileNotFoundError (one line) unless `workdir` has a checkpoints/ directory, checked before
    anything opens it, so that a mistyped workdir gets a message naming it."""
    paths.check_reachable(workdir)
    if not epath.Path(workdir).is_dir():
        raise FileNotFoundError(f"{paths.shown(workdir)}: no such run directory")
    directory = os.path.join(workdir, "checkpoints")
    if not epath.Path(directory).is_dir():
        raise FileNotFoundError(f"no checkpoint in {paths.shown(directory)}: train first")


def load_run(workdir: str, step: int | None = None, cfg=None, mesh=None, log=print):
    """(config, tokenizer, inference, params) of the run in `workdir` at `step` (the newest that
    reads and verifies if None). `inference` is training/trainer.py's Inference (model, shardings,
    jitted held-out loss) and carries what was derived from the config once
    (inference.derived: model/build.py's ModelConfig and RowFormat), which the evaluators and
    generation use. `mesh`: where the parameters go (default: one device).

    The config is the checkpoint's own, or `cfg` (its model and vocabulary checked against the
    checkpoint's: row lengths and the optimizer may differ);
    for a finetuning config (finetune.from_run) the checkpoint's resolved model with `cfg`'s
    evals and task.

    Reading creates nothing: a workdir that does not exist, or has no checkpoints/, is a one-line
    FileNotFoundError before the Checkpointer is built, and the Checkpointer is opened with
    create=False (the default would create checkpoints/ in a mistyped workdir and write the
    manifest marker into an existing one)."""
    _check_run_dir(workdir)
    import jax

    from metalm_jax.config import with_defaults
    from metalm_jax.data import tokenizer
    from metalm_jax.model.build import derive
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.checkpoint import PARAM_KEYS, Checkpointer, check_shapes
    from metalm_jax.training.trainer import build_inference

    ckpt = Checkpointer(workdir, 0, 1, create=False)  # reads only: writes no marker either
    try:
        saved, at = ckpt.saved_config(step)
        if cfg is None or cfg.finetune.from_run:
            run_cfg = with_defaults(saved)
            if cfg is not None:  # a finetuning config: the run's resolved model, its evals
                with run_cfg.unlocked():
                    run_cfg.evals = cfg.evals
                    run_cfg.task = cfg.task
            cfg = run_cfg
        else:
            check_shapes(saved, cfg.to_dict(), f"{ckpt.directory}/{at}", PARAM_KEYS)
        tok = tokenizer.saved(workdir, cfg.data.tokenizer_path)  # tokenizer.json or .model
        mesh = mesh if mesh is not None else make_mesh((1, 1, 1), jax.devices()[:1])
        inference = build_inference(cfg, mesh, derive(cfg, tok))
        with jax.set_mesh(mesh):
            params, _ = ckpt.restore_params(inference.abstract_params, step, log)
    finally:
        ckpt.close()
    return cfg, tok, inference, params
