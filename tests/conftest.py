"""Shared fixtures: one prepared micro corpus + tokenizer per session (tokenizer training and
TFDS preparation happen once)."""

import os

import pytest

from metalm_jax import testing


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(config, tokenizer) for a 60-chapter KJV JSONL corpus prepared as a TFDS LocalText."""
    from metalm_jax.data import pipeline

    base = tmp_path_factory.mktemp("corpus")
    path = testing.write_kjv_jsonl(os.path.join(base, "kjv60.jsonl"))
    cfg = testing.micro_config([path], data_dir=str(base / "tfds"))
    tok = pipeline.build_tokenizer(cfg, str(base / "work"))
    return cfg, tok
