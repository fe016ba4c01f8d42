"""Crash-safe file writing: a file is either its old content or its complete new content, never partial.

Each write goes to a temporary file in the same folder (same filesystem, so the rename is atomic), is flushed and
fsynced, then renamed over the target; the folder is fsynced so the rename itself survives a power loss.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------- many files at once
# Batch tagging writes thousands of small files: fsyncing the folder once per batch instead of once per file halves
# the fsyncs, and per-file errors are returned rather than raised so one read-only folder fails only its files.

# What atomic_write_bytes / atomic_write_many name their temporary files: mkstemp's 8 random characters.
_TEMP_PATTERN = r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$"


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_many(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write each ``(path, data)`` atomically, like :func:`atomic_write_bytes`, fsyncing each folder once.

    Every file is first written to a temporary file beside it and fsynced; then each is renamed over its target;
    then every folder involved is fsynced. A crash at any point leaves each target with its old or its complete new
    content, never a partial one (a temporary file may be left behind: see :func:`stale_temp_files`).

    Args:
        items: Targets and their new content; targets must be distinct. Parent folders must exist.

    Returns:
        One entry per item, in order: ``None`` when written, else the ``OSError`` that prevented it (the target is
        then unchanged and its temporary file removed).
    """
    errors: list[OSError | None] = [None] * len(items)
    temps: list[str | None] = [None] * len(items)
    new_mode = None
    for i, (path, data) in enumerate(items):
        path = Path(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                mode = path.stat().st_mode & 0o7777  # keep an existing file's permissions
            except FileNotFoundError:
                if new_mode is None:
                    new_mode = _new_file_mode()
                mode = new_mode
            os.chmod(tmp, mode)
            temps[i] = tmp
        except OSError as e:
            errors[i] = e
            _unlink_quietly(tmp)
    folders = set()
    for i, (path, _) in enumerate(items):
        tmp = temps[i]
        if tmp is None:
            continue
        try:
            os.replace(tmp, path)
            folders.add(Path(path).parent)
        except OSError as e:
            errors[i] = e
            _unlink_quietly(tmp)
    for folder in folders:
        _fsync_dir(folder)
    return errors


def _unlink_quietly(path: str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def stale_temp_files(folder: str | Path, names: set[str] | frozenset[str]) -> list[Path]:
    """Temporary files that an interrupted atomic write of one of ``names`` left in ``folder``.

    They are named ``.<name>.<8 random characters>.tmp`` (:func:`tempfile.mkstemp` with our prefix and suffix). Only
    the caller knows that no write is in progress (e.g. it holds the folder's lock), so this only lists them.

    Args:
        folder: Where the targets live.
        names: Target file names (no folder) whose leftovers to look for.

    Returns:
        Paths of the leftover temporary files (empty when the folder cannot be listed).
    """
    import re

    pattern = re.compile(_TEMP_PATTERN)  # re caches compiled patterns
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    out = []
    for entry in entries:
        m = pattern.match(entry)
        if m and m.group("name") in names:
            out.append(Path(folder) / entry)
    return out


# ------------------------------------------------------------------------------ keyed safetensors caches
# The text-feature caches (SBG's keywords, tag vocabularies) keep one safetensors file per key: the key in the file's
# metadata, so a renamed or stale file is a miss, and a file that cannot be read or written only costs recomputing.


def cache_file_name(model_name: str, key: str, digits: int) -> str:
    """``<model>-<key prefix>.safetensors``: the model's base name (made file-safe, 40 characters at most) for people
    looking into the folder, then the first ``digits`` characters of the key."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(model_name)).name)[:40]
    return f"{safe}-{key[:digits]}.safetensors"


def read_keyed_tensors(path: Path | None, key: str, names: Sequence[str]) -> dict[str, Any] | None:
    """The tensors ``names`` of the safetensors file ``path`` if its metadata ``key`` is ``key``; ``None`` for no
    path, a missing file, another key, or a file that cannot be read (logged: it is rebuilt)."""
    if path is None or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return {name: f.get_tensor(name) for name in names}
    except Exception as e:  # noqa: BLE001 - a damaged cache file is only a miss (safetensors has its own errors)
        log.warning("ignoring unreadable cache file %s (%s); it will be rebuilt", path, e)
        return None


def write_keyed_tensors(path: Path | None, key: str, tensors: Mapping[str, Any],
                        metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (on the CPU) to ``path`` atomically with ``key`` in the metadata; a folder that cannot be
    written is logged, not raised (a read-only models folder only costs the recomputation next time)."""
    if path is None:
        return
    from safetensors.torch import save

    data = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(data, metadata={**(metadata or {}), "key": key}))
    except OSError as e:
        log.warning("could not write the cache file %s (%s); it will be recomputed next time", path, e)
