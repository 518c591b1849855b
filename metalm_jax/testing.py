"""Shared test helpers: a micro config, a small corpus and tokenizer, synthetic batches.

Kept in the package (not tests/) so benchmarks and users' own tests can build the same tiny
setups. Nothing here is used by training code.
"""

from __future__ import annotations

import json
import os

import numpy as np

from metalm_jax.config import base_config
from metalm_jax.data.corpora.text import kjv_chapters
from metalm_jax.data.spans import SpanConfig, semi_causal_example


def micro_config(corpus_files=(), data_dir: str = ""):
    """A config small enough to compile in seconds: 2 x 32 decoder, 2 x 32 encoder."""
    c = base_config()
    c.name = "micro"
    if corpus_files:
        c.data.name = "files"
        c.data.files = list(corpus_files)
        c.data.validation_fraction = 0.2
    c.data.tfds_data_dir = data_dir
    c.data.vocab_size = 400  # >= 256 byte-fallback pieces + specials + chars
    c.data.seq_len = 64
    c.spans.min_len, c.spans.max_len, c.spans.enc_length = 4, 8, 24
    d = c.model.decoder
    d.num_layers, d.d_model, d.num_heads, d.d_ff, d.max_len = 2, 32, 2, 64, 64
    e = c.model.text_encoder
    e.num_layers, e.d_model, e.num_heads, e.d_ff, e.max_len = 2, 32, 2, 64, 16
    e.dropout = 0.0
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 2
    c.optim.frozen = [r"^text_encoder/stack/layers_0/"]
    c.optim.allow_frozen_random = True  # tests exercise freezing on a random micro encoder
    t = c.train
    t.steps, t.batch_size, t.log_every, t.eval_every = 6, 4, 2, 3
    t.eval_batches, t.checkpoint_every, t.sample_tokens = 2, 3, 4
    return c


# micro_config's sizes, as command-line overrides (micro_flags)
_MICRO_KEYS = (
    "data.vocab_size data.seq_len spans.min_len spans.max_len spans.enc_length "
    "model.decoder.num_layers model.decoder.d_model model.decoder.num_heads model.decoder.d_ff "
    "model.decoder.max_len model.text_encoder.num_layers model.text_encoder.d_model "
    "model.text_encoder.num_heads model.text_encoder.d_ff model.text_encoder.max_len "
    "model.text_encoder.dropout optim.warmup_steps train.batch_size train.eval_batches"
).split()


def micro_flags(steps: int = 2) -> list[str]:
    """`--config.*` overrides that shrink a language config (configs/tiny.py) to micro_config's
    sizes and a `steps`-step run with one log, eval and checkpoint at the end: for tests that
    run README's commands as written."""
    c = micro_config()
    flags = [f"--config.{key}={c[key]}" for key in _MICRO_KEYS]
    flags += [f"--config.train.{k}={steps}" for k in ("steps", "log_every", "eval_every")]
    flags += [f"--config.train.checkpoint_every={steps}", "--config.train.sample_tokens=4"]
    return flags


def write_kjv_jsonl(path: str, n_chapters: int = 60) -> str:
    """A JSONL corpus of the first KJV chapters (one document per line)."""
    with open(path, "w", encoding="utf-8") as f:
        for name, verses in kjv_chapters()[:n_chapters]:
            f.write(json.dumps({"text": "\n".join(verses), "title": name}) + "\n")
    return path


def write_byte_bpe(path: str, texts, vocab_size: int = 320) -> str:
    """A GPT-2-shaped byte-level BPE tokenizer.json trained offline on `texts` (strings): the
    256 byte symbols and merges, then <|endoftext|> as the last id (where GPT-2 has it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    tk.add_special_tokens(["<|endoftext|>"])
    tk.save(path)
    return path


def random_rows(n: int, seq_len: int, vocab: int, seed: int = 0, docs_per_row: int = 2):
    """Packed-looking rows: `docs_per_row` segments per row, tokens >= 5 (no special ids)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        cuts = np.sort(rng.choice(np.arange(8, seq_len - 8), docs_per_row - 1, replace=False))
        bounds = [0, *cuts.tolist(), seq_len]
        seg = np.zeros(seq_len, np.int32)
        pos = np.zeros(seq_len, np.int32)
        for k in range(docs_per_row):
            seg[bounds[k] : bounds[k + 1]] = k + 1
            pos[bounds[k] : bounds[k + 1]] = np.arange(bounds[k + 1] - bounds[k])
        tokens = rng.integers(5, vocab, seq_len).astype(np.int32)
        rows.append({"tokens": tokens, "segment_ids": seg, "positions": pos})
    return rows


def random_batch(batch: int, seq_len: int, vocab: int, spans: SpanConfig, seed: int = 0) -> dict:
    """A Batch-contract dict of random semi-causal rows."""
    rng = np.random.default_rng(seed)
    rows = [semi_causal_example(r, rng, spans) for r in random_rows(batch, seq_len, vocab, seed)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def micro_vl_config(corpus_files=(), data_dir: str = ""):
    """micro_config plus a 1-layer joint VL encoder on 16 x 16 images (4 patches + 4 prefix)."""
    c = micro_config(corpus_files, data_dir)
    c.name = "micro_vl"
    v = c.model.vision
    v.enabled = True
    v.num_layers, v.d_model, v.num_heads, v.d_ff = 1, 32, 2, 64
    v.patch_size, v.image_size, v.text_prefix = 8, 16, 4
    c.images.enabled = True
    c.images.images_per_row = 2
    return c


def random_vl_rows(layout, n: int, vocab: int, seed: int = 0) -> list:
    """Image-text Batch rows with random uint8 images and captions (2 pairs each when they
    fit)."""
    from metalm_jax.data.pretrain.vl_rows import build_vl_row

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        pairs = []
        for _ in range(layout.images_per_row):
            side = layout.image_size
            image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # raw pixels (types.py)
            caption = np.append(rng.integers(5, vocab, rng.integers(3, 8)), 2).astype(np.int32)
            pairs.append((image, caption))
        rows.append(build_vl_row(pairs, rng, layout))
    return rows


def rewrite_checkpoint(src: str, dst, key: str, value) -> str:
    """A copy of Hugging Face checkpoint directory `src` (config.json + model.safetensors) in
    `dst` with tensor `key` replaced or added: for tests of conversion errors."""
    import shutil

    from safetensors.numpy import load_file, save_file

    os.makedirs(dst)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    tensors[key] = value
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    return str(dst)


def micro_finetune_config(from_run: str, data_dir: str = "", task: str = "kjv_books"):
    """micro_config finetuning the run in `from_run` on an offline task (rows of 64, inputs of
    at most 15 tokens so they fit the micro encoder's 16 positions)."""
    c = micro_config(data_dir=data_dir)
    c.name = "micro_finetune"
    c.finetune.from_run = from_run
    c.task.name = task
    c.task.max_input_tokens, c.task.max_target_tokens = 15, 6
    c.task.eval_examples = 16
    c.spans.enc_length = 48
    c.optim.frozen = []
    # the micro source's spans train encoder positions 0-8 only; tests read 9-15 at random init
    c.finetune.allow_untrained_positions = True
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 4, 4, 4
    c.train.sample_tokens = 0
    return c


def write_emoji_webdataset(folder: str, shards: int = 2, per_shard: int = 200, size: int = 64):
    """img2dataset-style webdataset shards of the bundled OpenMoji emojis in `folder`:
    `00000.tar`, ... each with `key.jpg` (rendered at `size` px, JPEG), `key.txt` (its caption)
    and `key.json`; `shards` x `per_shard` pairs. For READMEs and tests of image-text data."""
    import io
    import tarfile

    from metalm_jax.data.corpora.image_text import captioned_emojis, render_emoji

    os.makedirs(folder, exist_ok=True)
    pairs = captioned_emojis()[: shards * per_shard]
    written = []
    for s in range(shards):
        path = os.path.join(folder, f"{s:05d}.tar")
        with tarfile.open(path, "w") as tar:
            for k, (hex_id, caption) in enumerate(pairs[s * per_shard : (s + 1) * per_shard]):
                jpg = io.BytesIO()
                render_emoji(hex_id, size).save(jpg, format="JPEG", quality=90)
                key = f"{s:05d}{k:04d}"
                meta = json.dumps({"key": key, "caption": caption, "emoji": hex_id})
                for ext, data in (
                    ("jpg", jpg.getvalue()),
                    ("txt", caption.encode()),
                    ("json", meta.encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        written.append(path)
    return written
