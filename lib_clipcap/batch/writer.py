"""Where captions go (sidecar and mirrored paths) and the JSONL / CSV manifests.

Naming rule, for every file name: the image's last suffix (as :func:`os.path.splitext` sees it, so ``.hidden.png`` ->
``.hidden``, ``a.b.jpg`` -> ``a.b``, ``noext`` -> ``noext``) is replaced by the caption suffix. The caption file sits
next to the image, or at the same relative path under the output folder when captions are mirrored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

from .options import FileOutcome

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "output", "status", "caption", "model", "score", "keywords", "reason")


def sidecar_name(image_name: str, caption_ext: str) -> str:
    """The caption file name for an image file name (see the module docstring)."""
    stem, _ = os.path.splitext(image_name)
    return stem + caption_ext


def caption_path(image: Path, *, caption_ext: str, root: Optional[Path] = None,
                 output_dir: Optional[Path] = None) -> Path:
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


def read_existing(path: Path) -> Optional[str]:
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


class Manifest:
    """Appends rows to a JSONL and/or CSV manifest, one write + fsync per batch.

    Existing files are appended to (a resumed run adds its rows after the first run's); a CSV header is written only
    to a new or empty file.

    Args:
        jsonl: Path of the JSONL manifest, or ``None``.
        csv_path: Path of the CSV manifest, or ``None``.
        model: Model name put in every row.
    """

    def __init__(self, jsonl: Optional[Path], csv_path: Optional[Path], *, model: str) -> None:
        self.model = model
        self._fds: List[tuple[int, str]] = []
        for path, kind in ((jsonl, "jsonl"), (csv_path, "csv")):
            if path is None:
                continue
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            self._fds.append((fd, kind))
            if size == 0 and kind == "csv":
                self._write(fd, self._csv(list(MANIFEST_COLUMNS)))
            elif size and not path.read_bytes().endswith(b"\n"):
                self._write(fd, b"\n")  # never cut a user's file: just start our rows on a new line

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
