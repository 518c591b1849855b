"""The read-only commands (evaluate, generate) create nothing in the workdir they are given: a
mistyped workdir once got a checkpoints/ directory from the Orbax CheckpointManager that
load_run opened to find out there was no checkpoint."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMANDS = {
    "generate": ["-m", "metalm_jax.generate", "--prompt=In the beginning"],
    "evaluate": ["-m", "metalm_jax.evaluate", "--config=configs/tiny.py"],
}


def _listing(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "{run}: no such run directory"),
        ("empty", "no checkpoint in {run}/checkpoints: train first"),
        ("no_steps", "no checkpoint in {run}/checkpoints: train first"),
    ],
)
def test_read_only_commands_create_nothing(tmp_path, command, layout, message):
    """A missing workdir, an empty one and one with an empty checkpoints/ each end with one line
    and exit 2, and the directory listing is the same afterwards."""
    run = tmp_path / "run"
    if layout != "missing":
        run.mkdir()
    if layout == "no_steps":
        (run / "checkpoints").mkdir()
    before = _listing(tmp_path)
    proc = subprocess.run(
        [sys.executable, *COMMANDS[command], f"--workdir={run}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: " + message.format(run=run)
    assert _listing(tmp_path) == before
