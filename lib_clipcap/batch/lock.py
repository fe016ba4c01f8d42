"""The folder lock of a batch run: two runs on the same output root cannot interleave their writes.

POSIX: an exclusive ``flock`` on ``.clipcap-lock``, which the kernel drops when the holder dies (``kill -9``
included), so a stale lock is taken over without trusting PIDs (which containers reuse); the file holds the holder's
PID and host for the error message. Elsewhere: create-exclusive, with a dead PID's lock taken over.

Why not the ``filelock`` package the hosts already install: its versions behave differently where it matters here.
filelock 3.13 (A1111's era) opens the lock file with ``O_TRUNC`` before trying the lock, so a second run wipes the
holder's PID and host (the "folder busy" message could no longer say who holds it), and it never removes the lock
file, leaving a ``.clipcap-lock`` in the user's folder after every run; 4.x differs again. This module keeps the
kernel-released lock, the holder's record intact, the file removed on release, and the check that the file locked is
still the one at the path (a lock file replaced between open and lock is retried, not trusted).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from .errors import BatchLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".clipcap-lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class FolderLock:
    """Exclusive lock on an output folder, so two runs cannot interleave their writes.

    Use as a context manager, or :meth:`acquire` / :meth:`release`. Acquiring fails fast (never waits).

    Args:
        folder: The output root; the lock file ``.clipcap-lock`` is created in it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _locked_error(self, info: dict[str, Any]) -> BatchLockedError:
        pid = info.get("pid", "?")
        host = info.get("host") or "this machine"
        since = info.get("started")
        when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        return BatchLockedError(
            f"{self.folder} is being tagged by another run (PID {pid} on {host}{when}); lock file {self.path}. Wait "
            f"for it to finish or stop it; if no such run exists any more, delete the lock file"
        )

    def _write_info(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)

    def acquire(self) -> FolderLock:
        """Take the lock.

        Raises:
            BatchLockedError: another live run holds it (the message names the lock file and the PID).
            OSError: the folder cannot be written (e.g. read-only).
        """
        if fcntl is not None:
            self._acquire_flock()
        else:  # pragma: no cover - Windows
            self._acquire_exclusive()
        return self

    def _acquire_flock(self) -> None:
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._locked_error(self._holder()) from None
            except OSError:
                os.close(fd)
                raise
            # The previous holder may have unlinked the file between our open() and flock(): then we locked an
            # orphan inode and must retry on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = self._holder()
            if stale.get("pid") and stale.get("pid") != os.getpid():
                log.warning("taking over the lock %s left by PID %s (that run is no longer running)", self.path,
                            stale.get("pid"))
            self._write_info(fd)
            self._fd = fd
            return
        raise BatchLockedError(f"could not lock {self.path}: it keeps being replaced by another run")

    def _acquire_exclusive(self) -> None:  # pragma: no cover - used where flock does not exist
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self._holder()
                pid = int(info.get("pid") or 0)
                if _pid_alive(pid) and info.get("host") in (None, socket.gethostname()):
                    raise self._locked_error(info) from None
                log.warning("taking over the stale lock %s of PID %s (no longer running)", self.path, pid)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            self._write_info(fd)
            self._fd = fd
            return
        raise BatchLockedError(f"could not lock {self.path}: it keeps being replaced by another run")

    def release(self) -> None:
        """Give the lock up and remove the lock file (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # unlink while still holding it: a waiter re-checks the inode (see acquire)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
