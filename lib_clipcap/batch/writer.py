"""Where captions go (sidecar and mirrored paths) and the JSONL / CSV manifests.

Naming rule, for every file name: the image's last suffix (as :func:`os.path.splitext` sees it, so ``.hidden.png`` ->
``.hidden``, ``a.b.jpg`` -> ``a.b``, ``noext`` -> ``noext``) is replaced by the caption suffix. The caption file sits
next to the image, or at the same relative path under the output folder when captions are mirrored.

Manifests are only ever files this tool writes: a new file (created exclusively, the CSV header first), or a manifest
an earlier run wrote, recognised by its first line (the CSV header :data:`MANIFEST_COLUMNS`, or a JSONL row with
exactly those keys); an empty file is taken as one a run created and left without rows. Anything else -- a user's
spreadsheet, a shell start-up file, an image, a script -- is refused (:func:`check_manifest_file`), because appending
rows that hold request-chosen text to it would change what it does.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..options_table import OptionError
from .options import FileOutcome, check_manifest_name

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "output", "status", "caption", "model", "score", "keywords", "reason")
_CSV_HEADER = ",".join(MANIFEST_COLUMNS).encode()
_FIRST_LINE_MAX = 1 << 20  # a manifest row is a path, a caption and a reason: far less than this
_FIELDS = {"jsonl": "manifest_jsonl", "csv": "manifest_csv"}


def sidecar_name(image_name: str, caption_ext: str) -> str:
    """The caption file name for an image file name (see the module docstring)."""
    stem, _ = os.path.splitext(image_name)
    return stem + caption_ext


def caption_path(image: Path, *, caption_ext: str, root: Path | None = None,
                 output_dir: Path | None = None) -> Path:
    """Where the caption of ``image`` is written.

    Args:
        image: The image (absolute).
        caption_ext: Suffix such as ``.txt``.
        root: The input folder ``image`` was found under (needed with ``output_dir``).
        output_dir: Mirror under this folder instead of writing next to the image.

    Returns:
        ``<folder of image>/<name>`` or ``<output_dir>/<image folder relative to root>/<name>``.
    """
    name = sidecar_name(image.name, caption_ext)
    if output_dir is None:
        return image.parent / name
    rel_dir = image.parent.relative_to(root) if root is not None else Path()
    return Path(output_dir) / rel_dir / name


def read_existing(path: Path) -> str | None:
    """The text of an existing caption file (UTF-8, a BOM dropped), or ``None`` when there is none.

    Raises:
        OSError: it exists but cannot be read (the message says so).
        UnicodeDecodeError: it is not UTF-8 (the caller reports that for this file only).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data.decode("utf-8-sig")


def _text_for_file(s: str) -> str:
    # Undecodable file names arrive as surrogate escapes; write them as \\udcXX rather than fail the manifest.
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _read_at(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: no pread; appends still go to the end (O_APPEND)
    return os.read(fd, size)


def _first_line(fd: int) -> bytes:
    """The first line of the open file ``fd`` (without its newline)."""
    data = b""
    while b"\n" not in data and len(data) < _FIRST_LINE_MAX:
        chunk = _read_at(fd, 65536, len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _is_our_first_line(line: bytes, kind: str) -> bool:
    if kind == "csv":
        return line.lstrip(b"\xef\xbb\xbf") == _CSV_HEADER  # a spreadsheet may have added a BOM
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and set(row) == set(MANIFEST_COLUMNS)


def _refuse(kind: str, shown: str, reason: str) -> OptionError:
    return OptionError(_FIELDS[kind], shown, reason)


def _check_open_file(fd: int, kind: str, shown: str) -> int:
    """The size of the open manifest ``fd``; raise unless it is a regular file an earlier run of ours wrote."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(kind, shown, "is a folder; give the path of a manifest file")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(kind, shown, "is not a regular file; give the path of a new manifest file")
    if st.st_size and not _is_our_first_line(_first_line(fd), kind):
        what = "the CSV header " + _CSV_HEADER.decode() if kind == "csv" else "a JSONL row of ours"
        raise _refuse(kind, shown, f"the file exists and was not written by ClipCap (its first line is not {what}); "
                                   f"refusing to add rows to it: give a new file name, or the manifest of an earlier "
                                   f"run")
    return st.st_size


def check_manifest_file(path: str | os.PathLike, kind: str, *, shown: str | None = None) -> None:
    """Raise unless ``path`` may be written as a manifest: its name (and, through a symlink, its target's name) passes
    :func:`~lib_clipcap.batch.options.check_manifest_name`, and it is missing or a manifest this tool wrote.

    Nothing is created or changed. Called when a job is accepted, so a refusal is an immediate 4xx; :class:`Manifest`
    applies the same rule again when it opens the file.

    Args:
        path: The manifest (absolute).
        kind: ``"jsonl"`` or ``"csv"``.
        shown: The path as the user typed it, for the message (default: ``path``).

    Raises:
        OptionError: naming ``manifest_jsonl`` / ``manifest_csv`` and the path as typed.
    """
    shown = os.fspath(path) if shown is None else shown
    try:
        check_manifest_name(_FIELDS[kind], os.fspath(path))
    except OptionError as e:
        raise _refuse(kind, shown, e.reason) from None
    real = os.path.realpath(path)
    if real != os.path.abspath(path):  # a symlink: what it leads to must be a manifest's name too
        try:
            check_manifest_name(_FIELDS[kind], real)
        except OptionError:
            raise _refuse(kind, shown, "is a symlink to a file that is not a manifest; give the path of a new "
                                       "manifest file") from None
    try:
        fd = os.open(real, os.O_RDONLY | _BINARY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the check
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise _refuse(kind, shown, "is a folder; give the path of a manifest file") from None
    except OSError as e:
        raise _refuse(kind, shown, f"cannot be read ({e.strerror or e}); give another path") from None
    try:
        _check_open_file(fd, kind, shown)
    finally:
        os.close(fd)


def _open_manifest(path: Path, kind: str) -> tuple[int, bool]:
    """Open ``path`` for appending: created exclusively, or an existing manifest of ours. Returns ``(fd, empty)``."""
    check_manifest_file(path, kind)
    real = os.path.realpath(path)
    Path(real).parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _BINARY, 0o644), True
    except FileExistsError:
        pass
    # O_RDWR: the first line is read back through this very descriptor, so what was checked is what gets the rows.
    fd = os.open(real, os.O_RDWR | os.O_APPEND | _BINARY | getattr(os, "O_NOFOLLOW", 0))
    try:
        return fd, _check_open_file(fd, kind, os.fspath(path)) == 0
    except BaseException:
        os.close(fd)
        raise


class Manifest:
    """Appends rows to a JSONL and/or CSV manifest, one write + fsync per batch.

    A new file is created (a CSV gets the header line first); an existing one is appended to only when it is a
    manifest this tool wrote (a resumed run adds its rows after the first run's), see the module docstring.

    Args:
        jsonl: Path of the JSONL manifest, or ``None``.
        csv_path: Path of the CSV manifest, or ``None``.
        model: Model name put in every row.

    Raises:
        OptionError: a path is not a manifest's name, or an existing file was not written by this tool.
        OSError: a manifest cannot be created.
    """

    def __init__(self, jsonl: Path | None, csv_path: Path | None, *, model: str) -> None:
        self.model = model
        self._fds: list[tuple[int, str]] = []
        try:
            for path, kind in ((jsonl, "jsonl"), (csv_path, "csv")):
                if path is None:
                    continue
                fd, empty = _open_manifest(Path(path), kind)
                self._fds.append((fd, kind))
                if empty and kind == "csv":
                    self._write(fd, self._csv(list(MANIFEST_COLUMNS)))
                elif not empty and _read_at(fd, 1, os.fstat(fd).st_size - 1) != b"\n":
                    self._write(fd, b"\n")  # a row torn by a crash: start ours on a new line
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _csv(row: Sequence[object]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        return _text_for_file(buf.getvalue()).encode("utf-8")

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def row(self, o: FileOutcome) -> dict:
        """The manifest row of an outcome."""
        return {"path": o.path, "output": o.output, "status": o.status, "caption": o.caption, "model": self.model,
                "score": o.score, "keywords": o.keywords, "reason": o.reason or None}

    def write(self, outcomes: Sequence[FileOutcome]) -> None:
        """Append one row per outcome to every manifest, then fsync.

        Raises:
            OSError: a manifest cannot be written.
        """
        if not self._fds or not outcomes:
            return
        rows = [self.row(o) for o in outcomes]
        for fd, kind in self._fds:
            if kind == "jsonl":
                blob = "".join(_text_for_file(json.dumps(r, ensure_ascii=False)) + "\n" for r in rows).encode()
            else:
                blob = b"".join(self._csv([
                    "" if r[c] is None else (", ".join(r[c]) if c == "keywords" else r[c]) for c in MANIFEST_COLUMNS
                ]) for r in rows)
            self._write(fd, blob)
            os.fsync(fd)

    def close(self) -> None:
        """Close the files (idempotent)."""
        for fd, _ in self._fds:
            os.close(fd)
        self._fds = []
