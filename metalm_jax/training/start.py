"""Where a run's starting train state comes from, decided in one place.

    a checkpoint in the workdir      -> resume: the newest intact step (or train.restore_step),
                                        chosen through the checkpoint door (checkpoint.py);
                                        model, optimizer and data position
    no checkpoint (or only unfinished
    ones, set aside)                 -> a fresh state: the frozen-loaded check, a random init
                                        (seed), then every `init` entry applied: pretrained
                                        weights (hf_*), an earlier run's modules (orbax), and
                                        finetune.from_run, which finetune.prepare_config has
                                        turned into one orbax entry per restored module

A resumed run keeps its own weights: `init` and finetune.from_run apply only to a fresh state.
The config the run records (and the checkpoint saves) says all of it, so the same command
resumes where it left off.
"""

from __future__ import annotations

import jax

from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.finetune import check_frozen_loaded
from metalm_jax.training.guard import NonFiniteError
from metalm_jax.training.init_from import apply_init
from metalm_jax.training.step import all_finite


def initial_state(cfg, trainer, ckpt: Checkpointer, train_iter, cfg_dict: dict, log):
    """The train state a run starts from (see the module docstring), placed in the trainer's
    shardings; `train_iter` is restored in place on a resume. Says what it did in one line
    (and what the `init` entries loaded)."""
    want = cfg.train.restore_step
    state, step = ckpt.restore_good(trainer.abstract_state, train_iter, cfg_dict, want, log)
    if state is not None:
        if not jax.jit(all_finite)((state.params, state.opt_state)):
            raise NonFiniteError(
                f"checkpoint {ckpt.directory}/{step} holds non-finite parameters or "
                "optimizer state (saved before saves were checked): move it out of "
                "checkpoints/ to resume from an earlier one"
            )
        if getattr(train_iter, "positioned_by_step", False):  # prepared rows: the step decides
            train_iter.seek(int(jax.device_get(state.step)))
        log(f"== resumed from {ckpt.directory}/{step}")
        return state
    check_frozen_loaded(cfg, trainer.abstract_state.params)
    state = trainer.init(jax.random.key(cfg.seed))
    log("== initialised a new state")
    params = apply_init(
        cfg, state.params, trainer.abstract_state.params, trainer.state_sharding.params, log
    )
    return state.replace(params=params)
