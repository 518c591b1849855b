"""Launching real training processes from tests: simulated CPU devices, and runs of several
processes on localhost that form one JAX job (CPU collectives)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_env(devices: int, cache: bool = True) -> dict:
    """The environment of a child process with `devices` simulated CPU devices; `cache=False`
    drops the session's persistent compilation cache (tests/conftest.py) for the processes of a
    multi-process job (a two-process Gloo run missed its coordinator deadline with a shared
    cache)."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(devices),
        "PYTHONPATH": ROOT,
    }
    if not cache:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def xla_flags(devices: int) -> str:
    """This process's XLA_FLAGS (the suite's compile flags, tests/conftest.py) with `devices`
    simulated CPU devices."""
    own = os.environ.get("XLA_FLAGS", "")
    return f"{own} --xla_force_host_platform_device_count={devices}".strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(argv: list[str], n: int, devices: int, timeout: float = 600) -> list[str]:
    """Runs `argv` as processes 0..n-1 of one multi-host job (`--multihost` with a localhost
    coordinator), `devices` CPU devices each; asserts they all exit 0; returns their outputs."""
    port = free_port()
    procs = [
        subprocess.Popen(
            argv
            + [
                "--multihost",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={n}",
                f"--process_id={i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cpu_env(devices, cache=False),
            cwd=ROOT,
        )
        for i in range(n)
    ]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outs


def _stat(pid) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a PID 1 that
    does not reap, in a container)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, seconds: float = 15) -> list[int]:
    """Waits up to `seconds` for the processes to end; the ones still alive."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`: {pid: command line}."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            fields = _stat(entry)
            if fields[0] != "Z" and int(fields[1]) == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found
