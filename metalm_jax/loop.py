"""The trainer, as a narrative: mesh -> data -> abstract state -> shardings -> jit(init) ->
restore -> loop with periodic actions (log, eval, checkpoint) -> final eval and sample.

Reliability (docs/ARCHITECTURE.md): the run holds the workdir lock (training/workdir_lock.py); a
signal (Ctrl-C, SIGTERM on preemption) finishes the step, saves and stops cleanly
(training/preemption.py), and so does a preemption notice from JAX on TPU VMs (Orbax's
preemption-aware save); every step's finite flag is read when logging and before every eval and
save, so a non-finite state is never saved (training/guard.py). Running the same command again
resumes from the latest checkpoint in the workdir, data iterator included.
"""

from __future__ import annotations

import math
import time

import jax

from metalm_jax import paths
from metalm_jax.data.feed import pipeline, vl_pipeline
from metalm_jax.eval.evaluators import build_evals
from metalm_jax.eval.generation import generate_with
from metalm_jax.eval.scoring import heldout_loss
from metalm_jax.model.build import count_params, derive, step_flops
from metalm_jax.parallel import mesh as meshlib
from metalm_jax.parallel.distributed import first_process_then_others
from metalm_jax.training import metrics as mlib
from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.finetune import prepare_config
from metalm_jax.training.guard import NonFiniteGuard
from metalm_jax.training.optimizer import schedule
from metalm_jax.training.preemption import Stopped, StopSignals
from metalm_jax.training.start import initial_state
from metalm_jax.training.trainer import build_trainer
from metalm_jax.training.watchdog import Watchdog
from metalm_jax.training.workdir_lock import hold_workdir
from metalm_jax.types import ConfigError


class Periodic:
    """Actions registered with `every=N`, run after steps that are multiples of N."""

    def __init__(self):
        self.actions = []

    def add(self, every: int, fn) -> None:
        if every > 0:
            self.actions.append((every, fn))

    def __call__(self, step: int) -> None:
        for every, fn in self.actions:
            if step % every == 0:
                fn(step)


def _corpus(cfg) -> str:
    if cfg.data.prepared_dir:
        return f"{cfg.data.name} prepared in {paths.shown(cfg.data.prepared_dir)}"
    return cfg.data.name


def train_and_evaluate(cfg, workdir: str) -> dict:
    """Runs (or resumes) training as configured; returns the final metrics.

    Raises WorkdirBusyError if another run holds the workdir, NonFiniteError on a non-finite
    step (train.nonfinite) and Stopped after a signal's checkpoint is saved."""
    t_start = time.time()
    mlib.console(f"== metalm_jax: {cfg.name} -> {paths.shown(workdir)}")
    with hold_workdir(workdir, cfg.train.lock_lease_minutes, mlib.console):
        return _train(cfg, workdir, t_start)


def _train(cfg, workdir: str, t_start: float) -> dict:
    cfg = prepare_config(cfg, workdir, mlib.console)
    cfg_dict = cfg.to_dict()

    # -- mesh ---------------------------------------------------------------------------
    mesh = meshlib.make_mesh(cfg.mesh.shape)
    mlib.console(
        f"== mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform}"
        f" devices, {jax.process_count()} process(es)"
    )

    # -- data -----------------------------------------------------------------------------
    tok = first_process_then_others("tokenizer", lambda: pipeline.build_tokenizer(cfg, workdir))
    if tok.vocab_size != cfg.data.vocab_size:
        raise ConfigError(
            f"tokenizer {tok.source} has {tok.vocab_size} pieces, "
            f"data.vocab_size={cfg.data.vocab_size}"
        )
    global_batch, procs = cfg.train.batch_size, jax.process_count()
    if global_batch % procs:
        raise ConfigError(f"train.batch_size={global_batch} not divisible by {procs} processes")
    local_batch = global_batch // procs
    shard = (jax.process_index(), procs)
    derived = derive(cfg, tok)  # ModelConfig and row format, passed down from here
    train_iter = pipeline.train_iterator(cfg, tok, local_batch, derived.rows, shard)
    try:  # worker processes reading the data (data.workers) stop with the run
        eval_data = pipeline.eval_sets(cfg, tok, local_batch, derived.rows, shard)
        mlib.console(
            f"== data {'task ' + cfg.task.name if cfg.task.name else _corpus(cfg)}: "
            f"tokenizer {tok.source} ({tok.vocab_size} pieces), "
            f"rows {cfg.data.seq_len}, global batch {global_batch}, "
            + ", ".join(f"{len(v)} {k} eval batches" for k, v in eval_data.items())
        )

        # -- model, optimizer, shardings; state created already sharded -----------------------
        trainer = build_trainer(cfg, mesh, derived)
        counts = count_params(trainer.abstract_state.params)
        mlib.console(
            "== params "
            + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
            + f"; optimizer groups (leaves) {trainer.groups}"
        )
        # built once, run at every evaluation
        evals = build_evals(cfg, workdir, trainer, tok, cfg.train.run_evals)
        ckpt = Checkpointer(workdir, cfg.train.checkpoint_every, cfg.train.keep_checkpoints)
        with jax.set_mesh(mesh):
            try:
                state = initial_state(cfg, trainer, ckpt, train_iter, cfg_dict, mlib.console)
            except BaseException:
                ckpt.close()
                raise
            return _loop(
                cfg,
                cfg_dict,
                workdir,
                trainer,
                tok,
                state,
                train_iter,
                eval_data,
                ckpt,
                t_start,
                evals,
            )
    finally:
        close_data = getattr(train_iter, "close", None)
        if close_data is not None:
            close_data()


def _loop(cfg, cfg_dict, workdir, trainer, tok, state, train_iter, eval_data, ckpt, t_start, evals):
    writer = mlib.MetricWriter(workdir, enabled=jax.process_index() == 0)
    flops = step_flops(cfg, trainer.model.cfg)
    peak = mlib.peak_flops(cfg.train.peak_flops)
    lr_fn = schedule(cfg.optim, cfg.train.steps)
    total = cfg.train.steps
    step = int(jax.device_get(state.step))
    pending: list = []
    last = {"time": time.time(), "step": step}
    final: dict = {}
    guard = NonFiniteGuard(
        cfg.train.nonfinite,
        cfg.train.max_skipped,
        lambda: "none" if ckpt.latest_step() is None else f"{ckpt.directory}/{ckpt.latest_step()}",
    )

    def log_train(s):
        nonlocal pending
        guard.check()
        got = [m for m in jax.device_get(pending) if m["finite"]]  # skipped steps left out
        pending = []
        weight = sum(float(m["weight"]) for m in got)
        loss = sum(float(m["loss_sum"]) for m in got) / max(weight, 1) if got else math.nan
        dt = (time.time() - last["time"]) / max(s - last["step"], 1)
        last.update(time=time.time(), step=s)
        tokens_s = cfg.train.batch_size * cfg.data.seq_len / dt
        mfu = flops["total"] / dt / peak
        m = {
            "train/loss": loss,
            "train/grad_norm": float(got[-1]["grad_norm"]) if got else math.nan,
            "train/lr": float(lr_fn(s)),
            "perf/tokens_per_s": tokens_s,
            "perf/mfu": mfu,
            "perf/step_s": dt,
        }
        if cfg.train.nonfinite == "skip":
            m["train/skipped_steps"] = guard.skipped
        if cfg.images.enabled:  # bad images skipped by this process (images.skip_bad_images)
            m["data/skipped_images"] = vl_pipeline.skipped_images()
        writer.write(s, m)
        final.update(m)
        mlib.console(
            f"step {s:>6}/{total}  loss {loss:.4f}  lr {m['train/lr']:.2e}  "
            f"{tokens_s:,.0f} tok/s  MFU {100 * mfu:.1f}%  "
            f"ETA {mlib.fmt_duration(dt * (total - s))}"
        )

    def run_eval(s):
        guard.check()
        final["eval_step"] = s
        m = heldout_loss(trainer, state.params, eval_data)
        if cfg.train.run_evals:  # e.g. task accuracy by generation while finetuning
            res = evals.run(state.params)
            for name, r in res.items():
                nums = {f"evals/{name}/{k}": v for k, v in r.items() if _is_number(v)}
                writer.write(s, nums)
                final.update(nums)
                mlib.console(
                    f"step {s:>6}  {name}: "
                    + "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in nums.items())
                )
        writer.write(s, m)
        final.update(m)
        mlib.console(
            f"step {s:>6}  "
            + "  ".join(f"{k[5:]} {v:.4f}" for k, v in m.items() if k.endswith("loss"))
            + f"  perplexity {m['eval/perplexity']:.2f}"
        )

    def save(s, force=False):
        guard.check()  # a non-finite state is never saved
        if not force or ckpt.latest_step() != s:
            ckpt.save(s, state, train_iter, cfg_dict, force=force)

    watchdog = Watchdog(cfg.train.watchdog_s)  # armed by the first step's beat, after compiling
    periodic = Periodic()
    periodic.add(cfg.train.log_every, log_train)
    periodic.add(cfg.train.eval_every, watchdog.pausing(run_eval))
    periodic.add(cfg.train.checkpoint_every, watchdog.pausing(save))

    if step == 0:
        mlib.console(
            f"== training {total} steps; model FLOPs/step {flops['total']:.3e} "
            f"(decoder {flops['decoder']:.3e}, encoder {flops['encoder']:.3e})"
        )
    try:
        # Signals only request a stop: the step, its periodic actions and the save complete.
        with StopSignals(cfg.train.log_every, notice=ckpt.reached_preemption) as stop:
            while step < total and not stop.requested(step):
                state, m = trainer.step(state, trainer.global_batch(next(train_iter)))
                step += 1
                watchdog.beat(step)
                ckpt.list_committed()  # the manifest of a save that committed meanwhile
                pending.append(m)
                guard.add(step, m)
                periodic(step)
            watchdog.close()
            stop.doing = f"saving the checkpoint of step {step}"
            if pending:
                log_train(step)
            if stop.stopping() is not None:
                mlib.console(f"== stopping at step {step}: saving a checkpoint")
            save(step, force=True)
            ckpt.manager.wait_until_finished()
        if stop.stopping() is not None:
            mlib.console(f"== saved {ckpt.directory}/{step}; run the same command again to resume")
            raise Stopped(stop.stopping(), step)
        if final.get("eval_step") != step:
            run_eval(step)
    finally:  # also on errors: a save in flight completes, nothing is left half-written
        watchdog.close()
        ckpt.close()
        writer.close()
    if cfg.train.sample_tokens > 0:
        text = generate_with(
            cfg,
            tok,
            trainer.model,
            state.params,
            [cfg.train.sample_prompt],
            layout=trainer.derived.layout,
            max_tokens=cfg.train.sample_tokens,
        )[0]
        mlib.console(f"== sample: {cfg.train.sample_prompt!r} -> {text!r}")
        final["sample"] = text
    mlib.console(f"== done in {mlib.fmt_duration(time.time() - t_start)}")
    final["step"] = step
    return final


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
