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


def pytest_configure(config):
    """One persistent compilation cache for the tests run in this process (CI time: many tests
    compile the same micro-model programs; a cold cache still saves ~13% on the in-process
    files). Only this process: subprocesses get no JAX_COMPILATION_CACHE_DIR (the two-process
    Gloo test missed its coordinator deadline with a shared cache), and tests that want a cache
    for their subprocesses pass their own."""
    import atexit
    import shutil
    import tempfile

    import jax

    cache = tempfile.mkdtemp(prefix="metalm_test_jax_cache_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
