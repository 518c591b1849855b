"""Load a trained run for inference: its config (or a given, checked one), tokenizer, model and
parameters from the latest (or a named) Orbax checkpoint, on one device."""

from __future__ import annotations

import os


def load_run(workdir: str, step: int | None = None, cfg=None):
    """(config, tokenizer, trainer, params) of the run in `workdir` at `step` (latest if None).
    The trainer carries what was derived from the config once (trainer.derived: model/build.py's
    ModelConfig and RowFormat), which the evaluators and generation use.

    The config is the checkpoint's own, or `cfg` (checked against the checkpoint's model); for a
    finetuning config (finetune.from_run) the checkpoint's resolved model with `cfg`'s evals and
    task."""
    import jax

    from metalm_jax.config import with_defaults
    from metalm_jax.data.tokenizer import Tokenizer
    from metalm_jax.model.build import derive
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.train.checkpoint import Checkpointer
    from metalm_jax.train.trainer import build_trainer

    ckpt = Checkpointer(workdir, 0, 1)
    steps = ckpt.manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: train first")
    step = max(steps) if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt.directory} (have {steps})")
    import orbax.checkpoint as ocp

    saved = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    saved = with_defaults(saved["config"])
    if cfg is None or cfg.finetune.from_run:
        if cfg is not None:  # a finetuning config: the run's resolved model, this config's evals
            with saved.unlocked():
                saved.evals = cfg.evals
                saved.task = cfg.task
        cfg = saved
    else:  # the optimizer only shapes the restored state (evaluation ignores it): the run's
        cfg = cfg.copy_and_resolve_references()  # own, so a run finetuned with a frozen
        with cfg.unlocked():  # decoder evaluates under its pretraining config
            cfg.optim = saved.optim
        ckpt.check_config(step, cfg.to_dict())
    tok_path = os.path.join(workdir, "tokenizer.model")
    if cfg.data.tokenizer_path:
        tok_path = cfg.data.tokenizer_path
    with open(tok_path, "rb") as f:
        tok = Tokenizer(f.read(), tok_path)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    trainer = build_trainer(cfg, mesh, derive(cfg, tok))
    with jax.set_mesh(mesh):
        state = ckpt.restore(step, trainer.abstract_state, None, cfg.to_dict())
    ckpt.close()
    return cfg, tok, trainer, state.params
