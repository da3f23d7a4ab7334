"""One loop at a time: an exclusive `fcntl.flock` on a lock file, which the OS releases when
the process ends however it ends (a kill included), so a stale lock never blocks the next
run the way a pid file would."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emergent.errors import StageError


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Hold the lock for the block; another holder is a one-line StageError, not a wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise StageError(
                f"another loop is running (pid {holder} holds {path}); this one did nothing"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
