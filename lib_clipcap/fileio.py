"""Crash-safe file writing: a file is either its old content or its complete new content, never partial.

Each write goes to a temporary file in the same folder (same filesystem, so the rename is atomic), is flushed and
fsynced, then renamed over the target; the folder is fsynced so the rename itself survives a power loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_replace(tmp: str | Path, target: str | Path) -> None:
    """Rename ``tmp`` over ``target`` atomically and make the rename durable."""
    os.replace(tmp, target)
    _fsync_dir(Path(target).parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        mode: permission bits for a new file (default: 0o666 minus the umask, like ``open``); an existing file's
            mode is kept.

    Raises:
        OSError: the folder is not writable, the disk is full...; the target is then unchanged and no temporary
        file is left behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
        atomic_replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` (UTF-8 by default, ``\\n`` line endings kept as given) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
