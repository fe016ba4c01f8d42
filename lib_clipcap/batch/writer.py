"""Where captions go (sidecar and mirrored paths) and the JSONL / CSV manifests.

Naming rule, for every file name: the image's last suffix (as :func:`os.path.splitext` sees it, so ``.hidden.png`` ->
``.hidden``, ``a.b.jpg`` -> ``a.b``, ``noext`` -> ``noext``) is replaced by the caption suffix. The caption file sits
next to the image, or at the same relative path under the output folder when captions are mirrored.

Manifests are only ever files this tool writes: a new file (created exclusively, the CSV header first), or a manifest
an earlier run wrote, recognised by its first line (the CSV header of one of :data:`MANIFEST_LAYOUTS`, or a JSONL row
with exactly the keys of one); an empty file is taken as one a run created and left without rows. Anything else -- a
user's spreadsheet, a shell start-up file, an image, a script -- is refused (:func:`check_manifest_file`), because
appending rows that hold request-chosen text to it would change what it does.

**Layouts.** A new manifest gets :data:`MANIFEST_COLUMNS`: ``path, output, status, caption, model, score, keywords,
reason, tags, tags_output``. ``tags`` holds every tag written for the image with its score, in the file's order, as
JSON: ``[["large", 1.0], ["yellow", 0.9731], ...]`` (a list in a JSONL row; the same JSON text in a CSV cell; a
score is a JSON number, which Python reads back as the very float written; ``null`` / an empty cell when the run
computes no tags). ``tags_output`` is the separate ``.tags`` file (``tags_file``). A manifest an earlier version
wrote (:data:`LEGACY_MANIFEST_COLUMNS`, without those two columns) is still recognised, resumed and appended to *in
its own layout*: its rows keep their columns, byte for byte as that version wrote them; a file is never switched to
another layout mid-run. :func:`read_manifest` reads either layout.
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

#: The columns of a manifest written before tags reached the manifests (issue 22); still read and appended to.
LEGACY_MANIFEST_COLUMNS = ("path", "output", "status", "caption", "model", "score", "keywords", "reason")
#: The columns of a new manifest: the legacy ones, then ``tags`` (JSON ``[[tag, score], ...]``) and ``tags_output``.
MANIFEST_COLUMNS = (*LEGACY_MANIFEST_COLUMNS, "tags", "tags_output")
#: Every layout a manifest of ours may have, the current one first.
MANIFEST_LAYOUTS = (MANIFEST_COLUMNS, LEGACY_MANIFEST_COLUMNS)
_CSV_HEADERS = {",".join(cols).encode(): cols for cols in MANIFEST_LAYOUTS}
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


def _layout_of(line: bytes, kind: str) -> tuple[str, ...] | None:
    """The layout (columns) of a manifest whose first line is ``line``, or ``None`` when it is not one of ours."""
    if kind == "csv":
        return _CSV_HEADERS.get(line.lstrip(b"\xef\xbb\xbf"))  # a spreadsheet may have added a BOM
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    return next((cols for cols in MANIFEST_LAYOUTS if set(row) == set(cols)), None)


def _is_our_first_line(line: bytes, kind: str) -> bool:
    return _layout_of(line, kind) is not None


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
        what = ("the CSV header " + " or ".join(h.decode() for h in _CSV_HEADERS) if kind == "csv"
                else "a JSONL row of ours")
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


def _open_manifest(path: Path, kind: str) -> tuple[int, bool, tuple[str, ...]]:
    """Open ``path`` for appending: created exclusively, or an existing manifest of ours. Returns ``(fd, empty,
    layout)``: a new or empty file gets :data:`MANIFEST_COLUMNS`, an existing one keeps its own layout."""
    check_manifest_file(path, kind)
    real = os.path.realpath(path)
    Path(real).parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _BINARY, 0o644), True, \
            MANIFEST_COLUMNS
    except FileExistsError:
        pass
    # O_RDWR: the first line is read back through this very descriptor, so what was checked is what gets the rows.
    fd = os.open(real, os.O_RDWR | os.O_APPEND | _BINARY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if _check_open_file(fd, kind, os.fspath(path)) == 0:
            return fd, True, MANIFEST_COLUMNS
        layout = _layout_of(_first_line(fd), kind)
        assert layout is not None  # _check_open_file refused any other first line
        return fd, False, layout
    except BaseException:
        os.close(fd)
        raise


def tags_json(tags: Sequence[Sequence[object]] | None) -> str:
    """The ``tags`` cell of a CSV manifest: ``[["red", 0.83], ...]`` as JSON (``""`` for none)."""
    if tags is None:
        return ""
    return json.dumps([[str(t), s] for t, s in tags], ensure_ascii=False)


def parse_tags(value: object) -> list[tuple[str, float | None]] | None:
    """The tags of a manifest cell or JSONL value (see the module docstring), as ``[(tag, score), ...]``.

    Raises:
        ValueError: the value is not a list of ``[tag, score]`` pairs.
    """
    if value is None or value == "":
        return None
    data = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, list):
        raise ValueError(f"tags must be a JSON list of [tag, score] pairs, not {value!r}")
    out = []
    for pair in data:
        if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                or not (pair[1] is None or isinstance(pair[1], (int, float)))):
            raise ValueError(f"tags must be a JSON list of [tag, score] pairs; got {pair!r}")
        out.append((pair[0], None if pair[1] is None else float(pair[1])))
    return out


def read_manifest(path: str | os.PathLike) -> list[dict[str, object]]:
    """The rows of a JSONL or CSV manifest of either layout (chosen by the suffix), as dicts with every column of
    :data:`MANIFEST_COLUMNS` (``None`` where the file's layout lacks one, or a cell is empty). ``tags`` comes back
    as ``[(tag, score), ...]``, ``keywords`` as a list, ``score`` as a float; a row torn by a crash is skipped.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a manifest of ours (its first line is neither layout's).
    """
    path = Path(path)
    kind = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    data = path.read_bytes()
    if not data:
        return []
    layout = _layout_of(data.split(b"\n", 1)[0].rstrip(b"\r"), kind)
    if layout is None:
        raise ValueError(f"{path} is not a ClipCap manifest (its first line is not one of ours)")
    rows: list[dict[str, object]] = []
    if kind == "jsonl":
        for line in data.split(b"\n"):
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if isinstance(raw, dict):
                rows.append({c: raw.get(c) for c in MANIFEST_COLUMNS})
    else:
        text = data.decode("utf-8-sig")
        for cells in list(csv.reader(io.StringIO(text)))[1:]:
            if len(cells) != len(layout):
                continue
            raw = dict(zip(layout, cells))
            row: dict[str, object] = {c: (raw.get(c) or None) for c in MANIFEST_COLUMNS}
            row["keywords"] = raw["keywords"].split(", ") if raw.get("keywords") else None
            row["score"] = float(raw["score"]) if raw.get("score") else None
            rows.append(row)
    for row in rows:
        row["tags"] = parse_tags(row.get("tags"))
    return rows


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
        self._fds: list[tuple[int, str, tuple[str, ...]]] = []
        try:
            for path, kind in ((jsonl, "jsonl"), (csv_path, "csv")):
                if path is None:
                    continue
                fd, empty, layout = _open_manifest(Path(path), kind)
                self._fds.append((fd, kind, layout))
                if empty and kind == "csv":
                    self._write(fd, self._csv(list(layout)))
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

    @property
    def layouts(self) -> list[tuple[str, ...]]:
        """The layout (columns) of each open manifest, JSONL first."""
        return [layout for *_, layout in self._fds]

    def row(self, o: FileOutcome) -> dict:
        """The manifest row of an outcome (every column of :data:`MANIFEST_COLUMNS`, in that order)."""
        tags = [[t, s] for t, s in o.tags] if o.tags is not None else None
        return {"path": o.path, "output": o.output, "status": o.status, "caption": o.caption, "model": self.model,
                "score": o.score, "keywords": o.keywords, "reason": o.reason or None, "tags": tags,
                "tags_output": o.tags_output}

    @staticmethod
    def _cell(column: str, value: object) -> object:
        if value is None:
            return ""
        if column == "keywords":
            return ", ".join(value)  # type: ignore[arg-type]
        if column == "tags":
            return tags_json(value)  # type: ignore[arg-type]
        return value

    def write(self, outcomes: Sequence[FileOutcome]) -> None:
        """Append one row per outcome to every manifest, each in its own layout, then fsync.

        Raises:
            OSError: a manifest cannot be written.
        """
        if not self._fds or not outcomes:
            return
        rows = [self.row(o) for o in outcomes]
        for fd, kind, layout in self._fds:
            if kind == "jsonl":
                blob = "".join(_text_for_file(json.dumps({c: r[c] for c in layout}, ensure_ascii=False)) + "\n"
                               for r in rows).encode()
            else:
                blob = b"".join(self._csv([self._cell(c, r[c]) for c in layout]) for r in rows)
            self._write(fd, blob)
            os.fsync(fd)

    def close(self) -> None:
        """Close the files (idempotent)."""
        for fd, *_ in self._fds:
            os.close(fd)
        self._fds = []
