"""Text in, text out: prompts (each optionally after an image's slots) become one left-padded
prompt batch, eval/decode.py extends it with a KV cache, and the new tokens are decoded to text.

`generate_with` works on a model in hand (the trainer's end-of-run sample, the completion
evaluator); `generate_text` loads a run first (the generate and caption commands).
"""

from __future__ import annotations

import os

import numpy as np


def generate_text(workdir, prompts, *, image=None, max_tokens=48, step=None, seed=0, **sampling):
    """Loads the run in `workdir` and returns one generation per prompt (see generate_with)."""
    from metalm_jax.eval.load import load_run

    if image is not None and not os.path.isfile(image):
        raise FileNotFoundError(f"--image {image!r} does not exist")
    cfg, tok, trainer, params = load_run(workdir, step)
    return generate_with(
        cfg,
        tok,
        trainer.model,
        params,
        prompts,
        layout=trainer.derived.layout,
        image=image,
        max_tokens=max_tokens,
        seed=seed,
        **sampling,
    )


def generate_with(
    cfg, tok, model, params, prompts, *, layout, image=None, max_tokens=48, seed=0, **sampling
):
    """KV-cache generations for text prompts, each after an image's slots if `image` (a path)
    is given; stops at the tokenizer's </d> (and </s> after an image; GPT-2: both are
    <|endoftext|>). `layout`: the run's ImageLayout (None without images; model/build.derive).
    `sampling`: decode.SamplingConfig's fields (temperature, top_k, top_p, beam,
    length_penalty); greedy by default."""
    import jax

    from metalm_jax.data.images import preprocess
    from metalm_jax.eval import decode
    from metalm_jax.model.build import dummy_batch

    slots_before = []
    if image is not None:
        if layout is None:
            raise ValueError(f"the run ({cfg.name}) has no vision encoder: drop --image")
        slots_before = layout.bank.image_slots(0, layout.image_slots).tolist()
    ids, slot_rows = [], []
    for p in prompts:
        text = tok.encode(p)
        ids.append([tok.bos] + [tok.pad] * len(slots_before) + text)
        slot_rows.append([-1] + slots_before + [-1] * len(text))
    grid = decode.left_pad_prompts(ids, slot_rows, tok.pad)
    B, P = grid["tokens"].shape
    enc_len = layout.enc_length if layout is not None else 1  # the bank offsets assume it
    batch = dummy_batch(B, P, enc_len, layout).replace(**grid)
    if image is not None:
        with open(image, "rb") as f:
            pixels = preprocess(f.read(), layout.image_size, record_id=image)
        images = np.zeros_like(batch.images)
        images[:, 0] = pixels
        valid = np.zeros_like(batch.image_valid)
        valid[:, 0] = 1
        batch = batch.replace(images=images, image_valid=valid)
    stops = tuple(dict.fromkeys((tok.eos, tok.doc_end) if image is not None else (tok.doc_end,)))
    out = decode.generate(
        model,
        params,
        batch,
        jax.random.key(seed),
        max_new=max_tokens,
        cfg=decode.SamplingConfig(**sampling),
        stop_ids=stops,
        pad_id=tok.pad,
    )
    return [tok.decode([t for t in row if t not in stops]) for row in np.asarray(out)]
