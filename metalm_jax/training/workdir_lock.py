"""One training run per workdir: a lock file `<workdir>/.lock` held by the run (process 0).

The file is JSON: host, pid, the process's start time (Linux: from /proc, so a reused pid is not
mistaken for the holder), when the run started and when it last refreshed its lease. A second
run on the same workdir refuses to start and names the holder. A lock is stale, and is taken over
with a message, when
  * its holder ran on this host and that process is gone (or is this process without holding
    it: a pid reused after a container restart), or
  * its holder ran on another host and has not refreshed the lease for `lease_minutes` (a
    background thread of the holder refreshes it every lease/4, at most every minute).
Taking over renames the stale file away first (atomic), then creates a new one exclusively, so of
two runs taking over at once only one gets the lock. Released at exit, normal or not; a killed
run leaves a lock that the rules above take over.

On an object store (a gs://... workdir, metalm_jax/paths.py) there is no exclusive create and no
atomic rename, so the lock is advisory there (ObjectStoreLock): the run writes the lock object
with its token, waits a moment and reads it back; it holds the lock if its token is still there.
A live holder is refused and a stale one taken over by the same rules; two runs that start
within the same second can still both read their own token back (the later write wins, and the
earlier run notices at its next refresh that the lock was taken, and says so).

Read-only commands (evaluate, generate) do not take it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

from etils import epath

from metalm_jax import paths
from metalm_jax.types import UserError

LOCK_NAME = ".lock"
_HELD: set[str] = set()  # tokens of the locks this process holds


class WorkdirBusyError(UserError, RuntimeError):
    """Another live run holds the workdir."""


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, "
        f"started {_when(holder.get('started', 0))}"
    )


def stale_reason(holder: dict, lease_minutes: float, now: float | None = None) -> str | None:
    """Why the lock described by `holder` is stale, or None while its holder may be running."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", -1))
        if pid == os.getpid():
            return None if holder.get("token") in _HELD else "its pid is now this process's"
        if not _pid_alive(pid):
            return "that process is gone"
        start = _proc_start(pid)
        if holder.get("proc_start") and start and start != holder["proc_start"]:
            return "that pid now belongs to another process"
        return None
    age = now - float(holder.get("refreshed", 0))
    if age > 60 * lease_minutes:
        return f"its lease was last refreshed {age / 60:.1f} min ago (train.lock_lease_minutes)"
    return None


class WorkdirLock:
    """`acquire()` or refuse; `release()`; a daemon thread refreshes the lease meanwhile."""

    missing_grace_s = 1.0  # a refresh that finds no lock file looks again after this long

    def __init__(self, workdir: str, lease_minutes: float = 10.0, log=print):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.lease_minutes = lease_minutes
        self.log = log
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = None
        now = time.time()
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "started": now,
            "refreshed": now,
            "token": self.token,
        }

    def _read(self, path: str) -> dict | None:
        """The holder's record; {} for an unreadable file (a writer mid-rename never leaves one:
        refreshes replace the file atomically), None when there is no file."""
        try:
            return json.loads(epath.Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _write_tmp(self) -> str:
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.record, f)
        return tmp

    def _create(self) -> bool:
        """Creates the lock with its whole content at once (a hard link of a written file
        fails if the lock exists), so no reader ever sees it empty."""
        tmp = self._write_tmp()
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
        return True

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(20):
            if self._create():
                break
            holder = self._read(self.path)
            if holder is None:
                continue  # released meanwhile
            reason = stale_reason(holder, self.lease_minutes) if holder else "it is unreadable"
            if reason is None:
                raise WorkdirBusyError(
                    f"workdir {os.path.dirname(self.path)} is in use by another run "
                    f"({describe(holder)}): stop it or use another --workdir (a lock whose "
                    f"holder is gone is taken over; {self.path} is the lock)"
                )
            aside = f"{self.path}.stale.{self.token}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if self._read(aside) != holder:  # someone took over first: give theirs back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                os.remove(aside)
                continue
            os.remove(aside)
            who = describe(holder) if holder else "unknown holder"
            self.log(f"== took over the workdir lock of {who}: {reason}")
        else:
            raise WorkdirBusyError(f"could not take the workdir lock {self.path}")
        _HELD.add(self.token)
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock")
        self._thread.start()

    def refresh(self) -> bool:
        """Renews the lease; False (and stops refreshing) if the lock is no longer ours."""
        holder = self._read(self.path)
        if holder is None and self.missing_grace_s:  # another run's take-over attempt may
            time.sleep(self.missing_grace_s)  # have it aside for a moment
            holder = self._read(self.path)
        if not holder or holder.get("token") != self.token:
            self.log(f"== warning: the workdir lock {self.path} was taken by another run")
            self._stop.set()
            return False
        self.record["refreshed"] = time.time()
        self._rewrite()
        return True

    def _rewrite(self) -> None:
        os.replace(self._write_tmp(), self.path)

    def _refresh_loop(self) -> None:
        interval = min(60.0, 60 * self.lease_minutes / 4)
        while not self._stop.wait(interval):
            try:
                if not self.refresh():
                    return
            except OSError as e:  # a full or flaky disk: the next refresh may work
                self.log(f"== warning: could not refresh the workdir lock: {e}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _HELD.discard(self.token)
        holder = self._read(self.path)
        if holder and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self._remove()

    def _remove(self) -> None:
        os.remove(self.path)


class ObjectStoreLock(WorkdirLock):
    """The lock of a workdir on an object store (gs://...): advisory (module docstring)."""

    settle_s = 1.0  # between writing the lock object and reading it back
    missing_grace_s = 0.0  # no take-over moves the object aside: missing means gone

    def __init__(self, workdir: str, lease_minutes: float = 10.0, log=print):
        super().__init__(workdir, lease_minutes, log)
        self.path = os.fspath(epath.Path(workdir) / LOCK_NAME)

    def _busy(self, holder: dict) -> WorkdirBusyError:
        return WorkdirBusyError(
            f"workdir {self.path.rsplit('/', 1)[0]} is in use by another run "
            f"({describe(holder)}): stop it or use another --workdir (a lock whose holder is "
            f"gone is taken over; {self.path} is the lock)"
        )

    def acquire(self) -> None:
        holder = self._read(self.path)
        if holder is not None:
            reason = stale_reason(holder, self.lease_minutes) if holder else "it is unreadable"
            if reason is None:
                raise self._busy(holder)
            who = describe(holder) if holder else "unknown holder"
            self.log(f"== took over the workdir lock of {who}: {reason}")
        paths.write_atomic(self.path, json.dumps(self.record))
        time.sleep(self.settle_s)
        holder = self._read(self.path)
        if not holder or holder.get("token") != self.token:
            raise self._busy(holder or {})
        self.log(
            f"== workdir lock {self.path}: advisory on an object store (no exclusive create); "
            "two runs started within the same second may both start"
        )
        _HELD.add(self.token)
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock")
        self._thread.start()

    def _rewrite(self) -> None:
        paths.write_atomic(self.path, json.dumps(self.record))

    def _remove(self) -> None:
        epath.Path(self.path).unlink()


@contextlib.contextmanager
def hold_workdir(workdir: str, lease_minutes: float, log=print):
    """Holds the workdir lock for the block: on process 0 of a multi-host job; the other
    processes wait for its answer and refuse too if it refused (so none hangs at a barrier).
    A workdir on an object store (gs://...) gets the advisory ObjectStoreLock."""
    import jax

    paths.check_reachable(workdir)  # the first touch of a run's workdir
    kind = ObjectStoreLock if paths.is_remote(workdir) else WorkdirLock
    lock = kind(workdir, lease_minutes, log) if jax.process_index() == 0 else None
    error = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirBusyError as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = bool(multihost_utils.broadcast_one_to_all(error is None))
        if not ok and error is None:
            error = WorkdirBusyError(f"workdir {workdir} is in use (see process 0's output)")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
