"""The watchdog: a training loop that makes no progress for `train.watchdog_s` seconds (a hung
collective, device or input pipeline) dumps every thread's stack and exits with status 124, so
a hung pod fails instead of holding its machines for hours.

The loop calls `beat(step)` after dispatching each step; a daemon thread checks the time since
the last beat. Dispatch is asynchronous, so a step that hangs on device shows up as the next
dispatch (or the next log step's host sync, or the multi-host stop all-gather) not returning,
which the watchdog sees. It is armed by the first beat (after the first step's compilation),
paused around evals and saves (`pausing`), and closed when the loop ends.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import threading
import time

EXIT_STATUS = 124  # as timeout(1): the job timed out


def _dump_and_exit(message: str) -> None:
    faulthandler.dump_traceback(file=2, all_threads=True)  # fd 2: whatever sys.stderr is now
    os.write(2, f"\n{message}\n".encode())
    os._exit(EXIT_STATUS)  # no cleanup: a hung thread could block any of it


class Watchdog:
    def __init__(self, timeout_s: float, on_timeout=_dump_and_exit, poll_s: float | None = None):
        """`timeout_s` <= 0: off. `on_timeout(message)` is called once, from the thread."""
        self.timeout_s = float(timeout_s)
        self.on_timeout = on_timeout
        self.poll_s = poll_s if poll_s is not None else min(max(self.timeout_s / 10, 0.05), 5.0)
        self._last: float | None = None  # monotonic time of the last beat; None: not armed
        self._step = 0
        self._paused = 0
        self._closed = threading.Event()
        self._thread = None
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()

    def beat(self, step: int) -> None:
        """Step `step` was dispatched: progress (arms the watchdog on the first call)."""
        self._step, self._last = step, time.monotonic()

    @contextlib.contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if self._last is not None:
                self._last = time.monotonic()  # the pause is not the next step's time

    def pausing(self, fn):
        """`fn` run with the watchdog paused (evals and saves may take long legitimately)."""

        def wrapped(*args, **kwargs):
            with self.paused():
                return fn(*args, **kwargs)

        return wrapped

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._closed.wait(self.poll_s):
            last = self._last
            if last is None or self._paused:
                continue
            idle = time.monotonic() - last
            if idle > self.timeout_s:
                self.on_timeout(
                    f"watchdog: no progress for {idle:.0f} s after step {self._step} "
                    f"(train.watchdog_s={self.timeout_s:g}): the stacks of every thread are "
                    f"above; exiting with status {EXIT_STATUS}"
                )
                return
