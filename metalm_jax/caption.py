"""Greedy caption for an image file from a trained vision-language run:

    python -m metalm_jax.caption --workdir runs/tiny_vl --image path/to/image.png [--step N]

Reads the run's config and tokenizer from the workdir, restores the parameters of the latest
(or a given) checkpoint and continues the row <s> [image slots] greedily until </s>: a shortcut
for `python -m metalm_jax.generate --workdir DIR --image PATH` (beam search and sampling there).
"""

from __future__ import annotations


def caption_image(workdir: str, image_path: str, max_tokens: int = 32, step=None) -> str:
    """Greedy (KV-cache) caption: generation from the row <s> [image slots] up to </s>."""
    from metalm_jax.eval.generation import generate_text

    return generate_text(workdir, [""], image=image_path, max_tokens=max_tokens, step=step)[0]


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    print(caption_image(f.workdir, f.image, f.max_tokens, f.step))


if __name__ == "__main__":
    from absl import flags, logging

    flags.DEFINE_string("workdir", None, "run directory with checkpoints/ and tokenizer.model")
    flags.DEFINE_string("image", None, "image file to caption")
    flags.DEFINE_integer("max_tokens", 32, "longest caption")
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
    flags.mark_flags_as_required(["workdir", "image"])
    logging.set_verbosity(logging.WARNING)
    from metalm_jax.cli import run_cli

    run_cli(main)  # user errors: one line, exit 2
