"""Greedy caption for an image file from a trained vision-language run:

    python -m metalm_jax.caption --workdir runs/tiny_vl --image path/to/image.png [--step N]

Reads the run's config and tokenizer from the workdir, restores the parameters of the latest
(or a given) checkpoint and continues the row <s> [image slots] greedily until </s>. A minimal
tool: KV-cache decoding, beam search and the evaluators belong to metalm_jax.evaluate/generate.
"""

from __future__ import annotations

import os

import ml_collections


def load_run(workdir: str, step: int | None = None, cfg=None):
    """(config, tokenizer, trainer, params) of the run in `workdir` at `step` (latest if None).

    The config is the checkpoint's own, or `cfg` (checked against the checkpoint's model)."""
    import jax

    from metalm_jax.data.tokenizer import Tokenizer
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

    if cfg is None:
        saved = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        cfg = ml_collections.ConfigDict(saved["config"])
    else:
        ckpt.check_config(step, cfg.to_dict())
    tok_path = os.path.join(workdir, "tokenizer.model")
    if cfg.data.tokenizer_path:
        tok_path = cfg.data.tokenizer_path
    with open(tok_path, "rb") as f:
        tok = Tokenizer(f.read(), tok_path)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        state = ckpt.restore(step, trainer.abstract_state, None, cfg.to_dict())
    ckpt.close()
    return cfg, tok, trainer, state.params


def caption_image(workdir: str, image_path: str, max_tokens: int = 32, step=None) -> str:
    from metalm_jax.data.images import preprocess
    from metalm_jax.eval.greedy import greedy_sample
    from metalm_jax.model.build import image_layout

    if not os.path.isfile(image_path):
        raise FileNotFoundError(f"--image {image_path!r} does not exist")
    cfg, tok, trainer, params = load_run(workdir, step)
    layout = image_layout(cfg)
    if layout is None:
        raise ValueError(f"the run in {workdir} has no vision encoder (config {cfg.name})")
    with open(image_path, "rb") as f:
        image = preprocess(f.read(), layout.image_size, record_id=image_path)
    return greedy_sample(
        trainer.model, params, tok, "", max_tokens, cfg.data.seq_len, layout=layout, image=image
    )


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    print(caption_image(f.workdir, f.image, f.max_tokens, f.step))


if __name__ == "__main__":
    from absl import app, flags, logging

    flags.DEFINE_string("workdir", None, "run directory with checkpoints/ and tokenizer.model")
    flags.DEFINE_string("image", None, "image file to caption")
    flags.DEFINE_integer("max_tokens", 32, "longest caption")
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
    flags.mark_flags_as_required(["workdir", "image"])
    logging.set_verbosity(logging.WARNING)
    app.run(main)
