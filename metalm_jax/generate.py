"""Print generations from a trained run (KV-cache decoding):

    python -m metalm_jax.generate --workdir runs/tiny --prompt "In the beginning"
        [--image PATH] [--beam 4 | --temperature 0.8 --top_k 40 --top_p 0.9] [--max_tokens 48]

Several --prompt flags are decoded together as one left-padded batch. With --image (a run with a
vision encoder) the prompt follows the image's slots, as in training's image-text rows. The
command line only: the generation itself is eval/generation.py.
"""

from __future__ import annotations


def main(argv):
    from absl import flags

    from metalm_jax.eval.generation import generate_text

    del argv
    f = flags.FLAGS
    texts = generate_text(
        f.workdir,
        f.prompt,
        image=f.image,
        max_tokens=f.max_tokens,
        step=f.step,
        seed=f.seed,
        temperature=f.temperature,
        top_k=f.top_k,
        top_p=f.top_p,
        beam=f.beam,
        length_penalty=f.length_penalty,
    )
    for p, t in zip(f.prompt, texts, strict=True):
        print(f"{p!r} -> {t!r}")


if __name__ == "__main__":
    from absl import flags, logging

    flags.DEFINE_string("workdir", None, "run directory with checkpoints/ and tokenizer.model")
    flags.DEFINE_multi_string("prompt", [""], "prompt text (repeatable)")
    flags.DEFINE_string("image", None, "image file (runs with a vision encoder)")
    flags.DEFINE_integer("max_tokens", 48, "new tokens at most")
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_float("temperature", 0.0, "0 = greedy")
    flags.DEFINE_integer("top_k", 0, "0 = off")
    flags.DEFINE_float("top_p", 1.0, "1 = off")
    flags.DEFINE_integer("beam", 1, "> 1: beam search")
    flags.DEFINE_float("length_penalty", 0.6, "beam search length penalty alpha")
    flags.mark_flags_as_required(["workdir"])
    logging.set_verbosity(logging.WARNING)
    from metalm_jax.cli import run_cli

    run_cli(main)  # user errors: one line, exit 2
