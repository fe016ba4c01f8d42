"""The Parquet manifest: a folder of part files, each written atomically, readable as one table.

``pyarrow.parquet.read_table(folder)``, ``pandas.read_parquet(folder)`` or ``ray.data.read_parquet(folder)`` read it
back (:func:`read_manifest` too, whatever layouts its parts have). Rows carry the same fields as the JSONL / CSV
manifests (``path``, ``output``, ``status``, ``caption``, ``model``, ``score``, ``keywords``, ``reason``, ``tags``,
``tags_output``), plus the full text written (``text``: prefix / suffix included), the image's ``size`` and
``mtime_ns`` when known, and the run ``signature`` (a hash of the settings that decide captions). ``tags`` is a list
of ``{tag, score}`` structs (every tag written, with its score; null when the run computes no tags).

A folder that an earlier version started (parts without ``tags`` / ``tags_output``: :data:`LEGACY_COLUMNS`) gets
its new parts in that same layout, so every part of one folder has one schema; a new folder gets :data:`COLUMNS`.

Part files are named ``part-<UTC time>-<random>-<n>.parquet``, so sorting their names sorts them by run and order:
when a file appears in several rows (a rerun with ``resume`` off), the last row is the latest. With
``sidecars=False`` the folder is also the resume record: :func:`done_images` lists the images it holds as written
with the same signature, unchanged since.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..batch.options import FileOutcome, TagOptions
from ..batch.policy import decorate
from ..fileio import atomic_write_bytes, stale_temp_files

log = logging.getLogger(__name__)

#: The columns of a part written before tags reached the manifests (issue 22).
LEGACY_COLUMNS = ("path", "output", "status", "caption", "text", "model", "score", "keywords", "reason", "size",
                  "mtime_ns", "signature")
#: The columns of a new folder's parts.
COLUMNS = (*LEGACY_COLUMNS, "tags", "tags_output")


def _schema(columns: Sequence[str] = COLUMNS) -> Any:
    import pyarrow as pa

    types = {"path": pa.string(), "output": pa.string(), "status": pa.string(), "caption": pa.string(),
             "text": pa.string(), "model": pa.string(), "score": pa.float64(), "keywords": pa.list_(pa.string()),
             "reason": pa.string(), "size": pa.int64(), "mtime_ns": pa.int64(), "signature": pa.string(),
             "tags": pa.list_(pa.struct([("tag", pa.string()), ("score", pa.float64())])),
             "tags_output": pa.string()}
    return pa.schema([(c, types[c]) for c in columns])


def folder_layout(folder: Path) -> tuple[str, ...]:
    """The columns new parts of ``folder`` get: those of its newest readable part (:data:`LEGACY_COLUMNS` for a
    folder an earlier version wrote), :data:`COLUMNS` for a new or empty folder."""
    import pyarrow.parquet as pq

    for part in reversed(part_files(folder)):
        try:
            names = set(pq.read_schema(part).names)
        except Exception:  # noqa: BLE001 - a damaged part says nothing about the layout
            continue
        return COLUMNS if "tags" in names else LEGACY_COLUMNS
    return COLUMNS


def read_manifest(folder: Path) -> Any:
    """Every row of the Parquet manifest in ``folder`` as one ``pyarrow.Table`` with :data:`COLUMNS`, whatever the
    layout of each part (the columns a legacy part lacks are null there). Unreadable parts are skipped with a
    warning.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    tables = []
    for part in part_files(folder):
        try:
            table = pq.read_table(part)
        except Exception as e:  # noqa: BLE001 - a foreign or damaged file must not hide the others
            log.warning("skipping unreadable manifest part %s: %s", part, e)
            continue
        for name in COLUMNS:
            if name not in table.column_names:
                typ = schema.field(name).type
                table = table.append_column(pa.field(name, typ), pa.nulls(len(table), typ))
        tables.append(table.select(list(COLUMNS)).cast(schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _clean(s: str | None) -> str | None:
    # Undecodable file names arrive as surrogate escapes; Parquet strings must be valid UTF-8.
    return None if s is None else s.encode("utf-8", "backslashreplace").decode("utf-8")


def part_files(folder: Path) -> list[Path]:
    """The manifest's part files, oldest first."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.name.startswith("part-") and p.suffix == ".parquet")
    except FileNotFoundError:
        return []


class ParquetManifest:
    """Collects rows and writes them as Parquet part files into ``folder`` (a manifest sink: ``write``, ``close``).

    Args:
        folder: The manifest folder (created).
        model: Model name put in every row.
        signature: The run's settings hash (see :func:`lib_clipcap.batch.journal.run_signature`).
        options: For the ``text`` column (prefix / suffix / separator).
        stats: Image path -> ``(size, mtime_ns)``, when known.
        flush_s, rows_per_part: Write a part after this many seconds or rows (and at :meth:`close`).
    """

    def __init__(self, folder: Path, *, model: str, signature: str, options: TagOptions,
                 stats: dict[str, tuple[int, int]] | None = None, flush_s: float = 30.0,
                 rows_per_part: int = 100_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.signature, self.options = model, signature, options
        self.stats = stats or {}
        self.flush_s, self.rows_per_part = flush_s, rows_per_part
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.columns = folder_layout(self.folder)  # a folder an earlier version started keeps its layout
        self.parts: list[Path] = []
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def write(self, outcomes: Sequence[FileOutcome]) -> None:
        """Add one row per outcome; write a part file when one is due.

        Raises:
            OSError: the part file cannot be written.
        """
        for o in outcomes:
            size, mtime = self.stats.get(o.path, (None, None))
            text = decorate(o.caption, self.options) if o.caption is not None else None
            row = {"path": _clean(o.path), "output": _clean(o.output), "status": o.status, "caption": o.caption,
                   "text": text, "model": self.model, "score": o.score,
                   "keywords": list(o.keywords) if o.keywords else None, "reason": o.reason or None, "size": size,
                   "mtime_ns": mtime, "signature": self.signature,
                   "tags": [{"tag": t, "score": s} for t, s in o.tags] if o.tags is not None else None,
                   "tags_output": _clean(o.tags_output)}
            self._rows.append({c: row[c] for c in self.columns})
        if len(self._rows) >= self.rows_per_part or time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far as one part file (atomically: temporary file, fsync, rename)."""
        self._last = time.monotonic()
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows, schema=_schema(self.columns))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path = self.folder / f"part-{self.run_id}-{len(self.parts):05d}.parquet"
        atomic_write_bytes(path, buf.getvalue())
        self.parts.append(path)
        self._rows = []

    def close(self) -> None:
        """Write the remaining rows (idempotent)."""
        self.flush()


def done_images(folder: Path, signature: str) -> dict[str, tuple[int | None, int | None]]:
    """Images the manifest in ``folder`` holds as ``written`` by a run with ``signature``: path -> (size, mtime_ns).

    A later row for the same path (another status) removes it. Unreadable part files are skipped with a warning.
    """
    import pyarrow.parquet as pq

    done: dict[str, tuple[int | None, int | None]] = {}
    for part in part_files(folder):
        try:
            rows = pq.read_table(part, columns=["path", "status", "size", "mtime_ns", "signature"]).to_pylist()
        except Exception as e:  # noqa: BLE001 - a foreign or damaged file must not stop the run
            log.warning("skipping unreadable manifest part %s: %s", part, e)
            continue
        for r in rows:
            if r["status"] == "written" and r["signature"] == signature:
                done[r["path"]] = (r["size"], r["mtime_ns"])
            else:
                done.pop(r["path"], None)
    return done


def remove_stale_parts(folder: Path) -> None:
    """Delete temporary files a killed run left in the manifest folder (call with its lock held)."""
    names = {p.name for p in part_files(folder)}
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(".part-") and entry.endswith(".tmp"):
            names.add(entry[1:].rsplit(".", 2)[0])
    for tmp in stale_temp_files(folder, names):
        try:
            tmp.unlink()
        except OSError as e:
            log.warning("cannot remove leftover temporary file %s: %s", tmp, e)
