"""Find the images of a run: folders (recursive, globs), single files and list files; no symlink loops.

Every image comes with the folder it was found under (its *root*), so captions can be mirrored under an output folder
by their path relative to that root. When a job manager restricts runs to some folders, every file and folder is
checked by its real path (symlinks resolved), so neither ``..`` nor a symlink can lead outside them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import is_image_path
from .errors import BatchInputError, PathNotAllowedError
from .options import TagFailure, TagOptions
from .writer import caption_path

log = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (``s3://bucket/key``, ``gs://``, ``file:///data``...), not for local paths."""
    return isinstance(path, str) and bool(_URL.match(path))


@dataclass(frozen=True)
class Item:
    """One image to caption.

    Attributes:
        path: Absolute path as found (symlinks not resolved, so mirrored outputs keep the user's layout).
        root: The input folder it was found under; for a file given directly, its own folder.
    """

    path: Path
    root: Path

    @property
    def rel(self) -> Path:
        """``path`` relative to ``root``."""
        return self.path.relative_to(self.root)

    def stat(self) -> os.stat_result:
        """The image's size and mtime (``st_size``, ``st_mtime_ns``), for the journal.

        Raises:
            OSError: the file cannot be read.
        """
        return os.stat(self.path)

    def caption_path(self, caption_ext: str, output_dir: Path | None) -> Path:
        """Where this image's caption file goes (see :func:`~lib_clipcap.batch.writer.caption_path`)."""
        return caption_path(self.path, caption_ext=caption_ext, root=self.root, output_dir=output_dir)


@dataclass
class Discovery:
    """Images found, in a stable order (inputs as given, each folder sorted), and entries that failed."""

    items: list[Any] = field(default_factory=list)  # Item, or another source's item (lib_clipcap.distributed)
    failures: list[TagFailure] = field(default_factory=list)


def is_within(path: str | os.PathLike, roots: Sequence[Path]) -> bool:
    """True when ``path``'s real path (symlinks and ``..`` resolved) is one of ``roots`` or inside one.

    Args:
        path: Any path; it need not exist (its existing part is resolved).
        roots: Folders, already resolved with ``os.path.realpath``.
    """
    real = os.path.realpath(path)
    for root in roots:
        r = os.fspath(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def check_allowed(path: str | os.PathLike, roots: Sequence[Path] | None, what: str, *, hint: str = "") -> None:
    """Raise unless ``path`` resolves inside ``roots`` (``None``: no restriction).

    Args:
        hint: How the operator allows another folder (a flag or a setting), added to the message.

    Raises:
        PathNotAllowedError: naming the path, where it resolves to, the allowed folders and ``hint``.
    """
    if roots is None or is_within(path, roots):
        return
    real = os.path.realpath(path)
    shown = f"{os.fspath(path)}" + (f" (resolves to {real})" if real != os.path.abspath(path) else "")
    raise PathNotAllowedError(
        f"{what} {shown} is outside the allowed folders ({', '.join(os.fspath(r) for r in roots)}); "
        f"choose a path inside one of them" + (f", or allow its folder in {hint}" if hint else "")
    )


def matches(rel: str, patterns: Iterable[str]) -> bool:
    """True when the posix relative path ``rel`` or its bare name matches one of the glob ``patterns``.

    Matching ignores case, so ``*.jpg`` also takes ``IMG_1.JPG``.
    """
    rel_l = rel.lower()
    name_l = rel_l.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel_l, p.lower()) or fnmatch.fnmatchcase(name_l, p.lower()) for p in patterns)


def read_list_entries(path: Path) -> list[str]:
    """The entries of a list file as written (UTF-8, one per line; blank lines and ``#`` comments dropped).

    Raises:
        BatchInputError: the list file does not exist or cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise BatchInputError(f"list file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BatchInputError(f"cannot read list file {path}: {e}") from e
    return [e for e in (line.strip() for line in text.splitlines()) if e and not e.startswith("#")]


def _list_entry_path(entry: str, list_file: Path) -> Path:
    p = Path(entry).expanduser()
    return p if p.is_absolute() else list_file.parent / p


class _Walker:
    """Collects items while remembering real folders and files already seen (symlink loops, overlapping inputs)."""

    def __init__(self, options: TagOptions, roots: Sequence[Path] | None) -> None:
        self.options = options
        self.roots = roots
        self.out = Discovery()
        self._seen_dirs: set[tuple[int, int]] = set()
        self._seen_files: set[str] = set()

    def _allowed(self, path: str, what: str) -> bool:
        if self.roots is None or is_within(path, self.roots):
            return True
        self.out.failures.append(TagFailure(path, f"{what} resolves to {os.path.realpath(path)}, outside the allowed "
                                                  f"folders; left out"))
        return False

    def add_file(self, path: Path, root: Path) -> None:
        if not self._allowed(os.fspath(path), "the file"):
            return
        real = os.path.realpath(path)
        if real in self._seen_files:  # the same image reached twice (symlink, overlapping inputs): caption it once
            log.debug("already listed: %s", path)
            return
        self._seen_files.add(real)
        self.out.items.append(Item(path, root))

    def walk(self, folder: Path) -> None:
        opts = self.options

        def onerror(err: OSError) -> None:
            self.out.failures.append(TagFailure(str(err.filename or folder), f"cannot list the folder: "
                                                                            f"{err.strerror or err}"))

        # followlinks=True so symlinked sub-folders are tagged; loops are cut by remembering (device, inode) pairs.
        for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError as e:
                onerror(e)
                dirnames[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in self._seen_dirs:
                log.info("skipping %s: folder already visited (symlink loop or repeated input)", dirpath)
                dirnames[:] = []
                continue
            self._seen_dirs.add(key)
            if not opts.recursive:
                dirnames[:] = []
            else:
                # .clipcap is ClipCap's state folder (run records, backups: batch.runs.STATE_DIR), never data
                dirnames[:] = sorted(d for d in dirnames
                                     if d != ".clipcap" and self._allowed(os.path.join(dirpath, d), "the folder"))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if not is_image_path(name):
                    continue
                rel = full.relative_to(folder).as_posix()
                if opts.include and not matches(rel, opts.include):
                    continue
                if opts.exclude and matches(rel, opts.exclude):
                    continue
                self.add_file(full, folder)

    def add_remote(self, found: Discovery) -> None:
        self.out.failures.extend(found.failures)
        for item in found.items:
            key = os.fspath(item.path)
            if key not in self._seen_files:
                self._seen_files.add(key)
                self.out.items.append(item)

    def add_input(self, raw: Path, *, listed_in: Path | None = None) -> None:
        path = Path(os.path.abspath(raw.expanduser()))
        if listed_in is None:
            check_allowed(path, self.roots, "input")
        if path.is_dir():
            if listed_in is None or self._allowed(os.fspath(path), "the folder"):
                self.walk(path)
        elif path.exists() or path.is_symlink():
            self.add_file(path, path.parent)
        elif listed_in is not None:
            self.out.failures.append(TagFailure(os.fspath(path), f"listed in {listed_in} but not found"))
        else:
            raise BatchInputError(f"input not found: {path}; check the path (folders and image files are accepted)")


#: Lists a URL input (or a URL listed in a list file, with that file's path) -> items and failures.
RemoteLister = Callable[[str, Path | None], Discovery]


def discover(options: TagOptions, *, allowed_roots: Sequence[Path] | None = None,
             remote: RemoteLister | None = None) -> Discovery:
    """Find the images ``options`` asks for.

    Args:
        options: Uses ``inputs``, ``list_file``, ``recursive``, ``include``, ``exclude``.
        allowed_roots: Real paths of the only folders a run may touch (job manager); ``None``: anywhere.
        remote: Lists ``scheme://`` inputs and list entries (the Ray engine's object-storage support); ``None``: they
            are taken as local paths, as always.

    Returns:
        A :class:`Discovery`: items in a stable order, each real file once, plus per-entry failures (list entries
        not found, unreadable folders, symlinks leading outside ``allowed_roots``).

    Raises:
        BatchInputError: an input or the list file does not exist.
        PathNotAllowedError: an input or the list file is outside ``allowed_roots``.
    """
    walker = _Walker(options, allowed_roots)
    for raw in options.inputs:
        if remote is not None and is_url(raw):
            walker.add_remote(remote(raw, None))
        else:
            walker.add_input(Path(raw))
    if options.list_file:
        list_path = Path(os.path.abspath(Path(options.list_file).expanduser()))
        check_allowed(list_path, allowed_roots, "list file")
        for entry in read_list_entries(list_path):
            if remote is not None and is_url(entry):
                walker.add_remote(remote(entry, list_path))
            else:
                walker.add_input(_list_entry_path(entry, list_path), listed_in=list_path)
    return walker.out
