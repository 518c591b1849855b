"""Clean stops on SIGTERM (preemption, `launch/tpu_vm.sh stop`, Slurm's time limit) and Ctrl-C.

While the training loop runs, the first SIGTERM or SIGINT only records a request: the loop
finishes its current step (and that step's log / eval / save), waits for any save in flight,
saves a checkpoint at that step and raises `Stopped`, which the command line turns into exit
status 0 (SIGTERM) or 130 (SIGINT) without a traceback. Later signals interrupt nothing; they
print that the run is still stopping. The handlers write with os.write: a handler that printed
could re-enter a `print` it interrupted.

Multi-host: every process records its own signals and the processes agree on the step to stop
at when they next log (an all-gather of the requests every `sync_every` steps), so they all
save the same step; a stop on one process stops all.

Preemption notices (TPU VMs): where JAX's preemption service runs (multi-host, after
`jax.distributed.initialize`), a maintenance event or SIGTERM reaching any host is propagated to
all of them and JAX picks the step they all save at. `notice(step)` (the checkpoint manager's
`reached_preemption`, training/checkpoint.py) is asked at every step on every process, as that
protocol requires; when it says yes the run stops there exactly as on SIGTERM (save, exit 0).
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import numpy as np

EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}


class Stopped(Exception):
    """Training stopped on a signal after saving; `exit_code` is what the process should
    return (0 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        self.exit_code = EXIT_CODES.get(signum, 1)
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")


def _say(msg: str) -> None:
    if jax.process_index() == 0:
        os.write(1, (msg + "\n").encode())


class StopSignals:
    """Context manager: SIGTERM and SIGINT handlers that request a stop (main thread only)."""

    def __init__(self, sync_every: int = 1, notice=None):
        """`notice(step) -> bool`: whether a preemption notice says to save at `step` and stop
        (the same answer on every process); None where there is no such service."""
        self.notice = notice
        self.signum: int | None = None  # this process's request (its signal handler's)
        self._agreed: int | None = None  # the stop every process agreed on (several processes)
        self.doing = "finishing the current step"  # what a repeated signal is told
        self.sync_every = max(int(sync_every), 1)
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            _say(f"== {name}: finishing the current step, then saving a checkpoint and exiting")
        else:
            _say(f"== {name} again: still {self.doing}; not stopping before that is done")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def requested(self, step: int) -> bool:
        """Whether to stop before the next step (`step` steps done); the same answer on every
        process. Asks the preemption notice first, at every step (its protocol needs that)."""
        if self.notice is not None and self.notice(step) and self._agreed is None:
            # a notice is a SIGTERM announced ahead (exit 0), at the same step on every process
            self.signum = self.signum or signal.SIGTERM
            self._agreed = signal.SIGTERM
            if jax.process_index() == 0:  # not in a signal handler: print is safe
                print(f"== preemption notice at step {step}: saving a checkpoint and exiting")
        if jax.process_count() == 1:
            return self.signum is not None
        if self._agreed is not None:
            return True
        if step % self.sync_every:
            return False
        from jax.experimental import multihost_utils

        # Decided from the gathered requests alone, never from this process's own: a signal
        # that arrives while the gather runs is not in what the others received, so acting on
        # it here would stop this process one step before the others (each then waits for the
        # other in a collective, found by tests/test_multiprocess.py under load). It is in the
        # next gather.
        got = multihost_utils.process_allgather(np.int32(self.signum or 0))
        if np.any(got):
            self._agreed = int(np.max(got))
        return self._agreed is not None

    def stopping(self) -> int | None:
        """The signal the run stops for: with one process any recorded; with several, only one
        that every process agreed on in requested() (a signal that came after the last
        agreement changes nothing: every process finishes the run as if it had not come)."""
        if jax.process_count() == 1:
            return self.signum
        return self._agreed
