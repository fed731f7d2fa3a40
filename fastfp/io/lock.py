"""A file lock: one writer at a time for a file shared by several processes (``PATH.lock``)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fastfp import _validate


class LockTimeout(TimeoutError):
    """Another process holds the lock of a file (its pid and host are in the message)."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
        return f"pid {info.get('pid')} on host {info.get('host')!r}"
    except (OSError, ValueError):
        return "an unknown process"


_HELD: set[str] = set()  # lock files this process holds


@contextlib.contextmanager
def lock(path: str | os.PathLike[str], *, wait: float | None = 0.0,
         name: str = "path") -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``PATH.lock`` beside ``path`` while the block runs.

    Two writers of one file (e.g. two database builds) then never overwrite each other's work: the
    second waits up to ``wait`` seconds (None: forever) and then raises :class:`LockTimeout`
    naming the holder's pid and host. The lock file stays (removing it could race with a new
    holder); the kernel drops the lock when its holder exits, even when killed. It is re-entrant
    within a process (a locked build saves under it): it keeps processes apart, not threads.
    """
    import fcntl

    path = _validate.path(name, path)
    if wait is not None:
        wait = _validate.real("wait", wait, lo=0.0)
    lock_path = path.with_name(path.name + ".lock")
    key = str(lock_path.resolve())
    if key in _HELD:  # this process holds it already (a save inside a locked build)
        yield path
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{name}: {str(path)!r} is locked by {_holder(lock_path)} "
                        f"(lock file {str(lock_path)!r}); waited {wait:g} s") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        _HELD.add(key)
        try:
            yield path
        finally:
            _HELD.discard(key)
            os.ftruncate(fd, 0)  # the holder is gone: no stale pid in the file
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
