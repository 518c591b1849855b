"""Everything compiled for training on one mesh: model, optimizer, shardings, jitted functions.

State is created already sharded: abstract init (`jax.eval_shape`) -> logical partition specs
-> mesh shardings through the config's rules -> `jit(init, out_shardings=...)`. The train step
is one `jax.jit` with in/out shardings and the state donated. Used by the loop and by tests that
compare meshes. Inference (eval/load.py) builds only the part without an optimizer:
`build_inference` -> `Inference` (model, parameter and batch shardings, jitted held-out loss), of
which `Trainer` is the extension.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalm_jax.model.build import Derived, dummy_batch, image_layout, model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.parallel import mesh as meshlib
from metalm_jax.training.checkpoint import abstract_with_shardings
from metalm_jax.training.optimizer import group_labels, make_optimizer
from metalm_jax.training.step import TrainState, eval_step, train_step
from metalm_jax.types import Batch, SlotBank


@dataclasses.dataclass(kw_only=True)
class Inference:
    """What scoring and generation need on one mesh: the model, parameter and batch shardings,
    the jitted held-out loss. No optimizer (eval/load.py builds this, not a Trainer)."""

    model: MetaLM
    mesh: Any
    param_sharding: Any
    batch_sharding: Any
    abstract_params: Any  # ShapeDtypeStructs carrying their shardings
    eval: Any  # jitted: (params, Batch) -> {loss_sum, weight}
    bank: SlotBank | None = None  # what slot_index points into (None: no encoder reads slots)
    derived: Derived | None = None  # the run's derived configs, when built from them

    def global_batch(self, local: dict) -> Batch:
        """This process's rows (dict of numpy) -> one global, sharded Batch; raises ValueError
        naming the row and position of a slot index past the slot bank (the model's gather
        would clip it), or of images that are not uint8 pixels (a float array would be taken
        as normalized already by the vision encoder, and compile a second step)."""
        if self.bank is not None:
            self.bank.check(local["slot_index"])
        images = local.get("images")
        if images is not None and images.dtype != np.uint8:
            raise ValueError(
                f"Batch.images: expected uint8 pixels (normalized on the device), got "
                f"{images.dtype} (data/images.preprocess makes them)"
            )
        sh = self.batch_sharding
        return Batch.from_dict(
            {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}
        )


@dataclasses.dataclass(kw_only=True)
class Trainer(Inference):
    """An Inference plus the optimizer, the train state's shardings and the jitted steps."""

    tx: optax.GradientTransformation
    state_sharding: TrainState
    abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
    init: Any  # jitted: rng -> sharded TrainState
    step: Any  # jitted: (state, Batch) -> (state, metrics); donates the state
    groups: dict


def _with_rules(fn, rules):
    """Traces `fn` inside the logical-axis rules, so activation constraints take effect."""

    @functools.wraps(fn)
    def wrapped(*args):
        with nn.logical_axis_rules(rules):
            return fn(*args)

    return wrapped


def build_inference(cfg, mesh, derived: Derived | None = None) -> Inference:
    """The Inference of `cfg` on `mesh` (no optimizer is built); `derived`:
    model/build.derive(cfg, tok), when the caller derived it already (kept for the evaluators)."""
    rules = cfg.mesh.rules
    mc = derived.model if derived is not None else model_config(cfg)
    layout = derived.layout if derived is not None else image_layout(cfg, mc)
    model = MetaLM(mc)
    example = dummy_batch(1, cfg.data.seq_len, cfg.spans.enc_length, layout)
    bank = None
    if layout is not None:
        bank = layout.bank
    elif mc.text_encoder is not None:
        bank = SlotBank(cfg.spans.enc_length)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), example)["params"])
    param_sh = meshlib.logical_shardings(boxed, mesh, rules)
    batch_sh = meshlib.batch_sharding(mesh, rules)
    return Inference(
        model=model,
        mesh=mesh,
        param_sharding=param_sh,
        batch_sharding=batch_sh,
        abstract_params=abstract_with_shardings(nn.unbox(boxed), param_sh),
        eval=jax.jit(
            _with_rules(functools.partial(eval_step, model=model), meshlib.rules_tuple(rules)),
            in_shardings=(param_sh, batch_sh),
            out_shardings=meshlib.replicated(mesh),
        ),
        bank=bank,
        derived=derived,
    )


def build_trainer(cfg, mesh, derived: Derived | None = None) -> Trainer:
    """The Trainer of `cfg` on `mesh`: build_inference's parts, then the optimizer, the state's
    shardings and the jitted init and train step."""
    rules = cfg.mesh.rules
    rows = meshlib.batch_sharding(mesh, rules).num_devices // int(mesh.shape["tensor"])
    if cfg.train.batch_size % (rows * cfg.train.grad_accum_steps):
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must divide into "
            f"train.grad_accum_steps={cfg.train.grad_accum_steps} microbatches split over the "
            f"{rows} data x fsdp devices of mesh {dict(mesh.shape)}"
        )
    if cfg.train.nonfinite not in ("stop", "skip"):
        raise ValueError(f'train.nonfinite={cfg.train.nonfinite!r}: use "stop" or "skip"')
    inf = build_inference(cfg, mesh, derived)
    model, param_sh, batch_sh = inf.model, inf.param_sharding, inf.batch_sharding
    layout = inf.derived.layout if inf.derived is not None else image_layout(cfg, model.cfg)
    example = dummy_batch(1, cfg.data.seq_len, cfg.spans.enc_length, layout)
    abs_params = inf.abstract_params
    tx, groups = make_optimizer(cfg.optim, cfg.train.steps, abs_params)

    repl = meshlib.replicated(mesh)
    masked = lambda x: isinstance(x, optax.MaskedNode)  # frozen groups hold no state
    opt_sh = optax.tree_map_params(
        tx,
        lambda x, s: x if masked(x) else s,
        jax.eval_shape(tx.init, abs_params),
        param_sh,
        transform_non_params=lambda _: repl,
        is_leaf=masked,
    )
    state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh)

    def init_state(rng):
        params = nn.unbox(model.init(rng, example)["params"])
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    abstract = abstract_with_shardings(jax.eval_shape(init_state, jax.random.key(0)), state_sh)
    labels, _ = group_labels(abs_params, list(cfg.optim.frozen), ())
    frozen = jax.tree.map(lambda lab: lab == "frozen", labels)
    step = functools.partial(
        train_step,
        model=model,
        tx=tx,
        seed=cfg.seed,
        accum=cfg.train.grad_accum_steps,
        frozen=frozen if any(jax.tree.leaves(frozen)) else None,
        skip_nonfinite=cfg.train.nonfinite == "skip",
        fused_xent=cfg.train.fused_xent,
    )
    return Trainer(
        **{f.name: getattr(inf, f.name) for f in dataclasses.fields(Inference)},
        tx=tx,
        state_sharding=state_sh,
        abstract_state=abstract,
        init=jax.jit(init_state, out_shardings=state_sh),
        step=jax.jit(
            _with_rules(step, meshlib.rules_tuple(rules)),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, repl),
            donate_argnums=0,
        ),
        groups=groups,
    )
