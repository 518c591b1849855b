"""The test tiers of tests/conftest.py, on a throwaway suite run by a real pytest: the default
tier deselects slow tests and fails an unmarked one over the time limit; --full runs both and
applies no limit; an explicit -m chooses for itself."""

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the full tier: each test runs pytest in a subprocess (4-8 s)

HERE = os.path.dirname(os.path.abspath(__file__))

SUITE = """
import time

import pytest


def test_quick():
    pass


def test_lingers():
    time.sleep(1.5)


@pytest.mark.slow
def test_heavy():
    pass
"""


def _pytest(tmp_path, *args, limit="1"):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: heavy\n")
    env = {**os.environ, "METALM_SLOW_LIMIT_S": limit, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return out.stdout


def test_the_default_tier_deselects_slow_tests_and_fails_a_lingering_one(tmp_path):
    out = _pytest(tmp_path)
    assert "1 failed, 1 passed, 1 deselected" in out, out
    assert "FAILED test_suite.py::test_lingers" in out, out
    assert "over the default tier's 1 s limit: make it faster or mark it" in out, out


def test_the_full_tier_runs_everything_without_the_limit(tmp_path):
    out = _pytest(tmp_path, "--full")
    assert "3 passed" in out and "failed" not in out, out
    # the slow test runs first (-rA lists the passes in the order they ran)
    order = [line.split("::")[1] for line in out.splitlines() if line.startswith("PASSED")]
    assert order == ["test_heavy", "test_quick", "test_lingers"], out


def test_an_explicit_marker_expression_chooses_for_itself(tmp_path):
    out = _pytest(tmp_path, "-m", "slow")
    assert "1 passed, 2 deselected" in out, out
    out = _pytest(tmp_path, limit="0")  # the limit off
    assert "2 passed, 1 deselected" in out, out
