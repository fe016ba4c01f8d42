"""The resumable journal and the folder lock of a batch run.

**Journal** (``.clipcap-journal.jsonl`` in the output root). Its first line holds the run's *signature* (a hash of the
settings that decide caption content: model, decoding, post-processing, policy); each further line records one
caption file: its path relative to the root, the image's size and mtime, and the SHA-256 of the exact bytes about to
be written. Records are appended and fsynced *before* the batch's caption files are renamed into place, so for every
caption file that exists there is a record; a file counts as done only when its current content hashes to the
record. That one rule covers every crash point: killed before the rename -> hashes differ -> captioned again (and an
``append`` run appends to the old text once, not twice); killed after it -> hashes match -> skipped. A run with other
settings starts a new journal. The output root's lock (:mod:`.lock`) keeps two runs from sharing a journal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_NAME = ".clipcap-journal.jsonl"
_VERSION = 1


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """Hex SHA-256 of a file's content, or ``None`` when it cannot be read (missing, a folder...)."""
    try:
        return sha256_bytes(path.read_bytes())
    except OSError:
        return None


def run_signature(fields: dict[str, Any], model: str) -> str:
    """A short stable hash of the settings that decide caption content."""
    blob = json.dumps({"model": model, **fields}, sort_keys=True, ensure_ascii=True, default=str)
    return sha256_bytes(blob.encode())[:16]


@dataclass(frozen=True)
class JournalEntry:
    """What the journal knows about one caption file."""

    image: str
    size: int
    mtime_ns: int
    sha256: str


class Journal:
    """The journal of one output root.

    Args:
        root: The output root (the journal file ``.clipcap-journal.jsonl`` lives there).
        signature: :func:`run_signature` of the current run; entries of a run with another signature are ignored.
        resume: ``False``: ignore earlier entries (and replace the file when writing).
    """

    def __init__(self, root: Path, signature: str, *, resume: bool = True) -> None:
        self.root = Path(root)
        self.path = self.root / JOURNAL_NAME
        self.signature = signature
        self.resume = resume
        self.entries: dict[str, JournalEntry] = {}
        self._matches = False  # the file on disk belongs to this run's signature
        self._fd: int | None = None

    def load(self) -> Journal:
        """Read the entries of an earlier run with the same signature (none if absent, different, or resume off).

        Unreadable lines (a line torn by a power loss) are ignored.
        """
        self.entries = {}
        self._matches = False
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return self
        except OSError as e:
            log.warning("cannot read the journal %s (%s); starting a new one", self.path, e)
            return self
        lines = raw.split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = {}
        self._matches = header.get("signature") == self.signature
        if not (self._matches and self.resume):
            return self
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                self.entries[rec["out"]] = JournalEntry(rec["image"], int(rec["size"]), int(rec["mtime_ns"]),
                                                        rec["sha256"])
            except (ValueError, KeyError, TypeError):
                continue
        return self

    def key(self, output: Path) -> str:
        """The journal key of a caption file: its path relative to the root, posix style."""
        return Path(os.path.relpath(output, self.root)).as_posix()

    def is_done(self, output: Path, image_size: int, image_mtime_ns: int) -> bool:
        """True when an earlier run finished ``output`` for this (unchanged) image and the file still holds it."""
        entry = self.entries.get(self.key(output))
        if entry is None or entry.size != image_size or entry.mtime_ns != image_mtime_ns:
            return False
        return file_sha256(output) == entry.sha256

    def open(self) -> None:
        """Open the journal for appending; start a new file (atomically) unless it belongs to this run."""
        from ..fileio import atomic_write_bytes

        if not (self._matches and self.resume):
            header = {"journal": "clipcap-batch", "version": _VERSION, "signature": self.signature,
                      "created": time.time()}
            atomic_write_bytes(self.path, (json.dumps(header) + "\n").encode())
            self._matches = True
        else:
            self._repair_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _repair_tail(self) -> None:
        # Appends are single write() calls, so only a power loss can leave a torn last line; cut it off so the next
        # record starts on a line of its own.
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records (``out``, ``image``, ``size``, ``mtime_ns``, ``sha256``) in one write, then fsync.

        Raises:
            OSError: the journal cannot be written (the run must stop: it could no longer resume safely).
        """
        if not records or self._fd is None:
            return
        # ensure_ascii keeps undecodable file names (surrogate escapes) intact and the file plain ASCII.
        blob = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode("ascii")
        view = memoryview(blob)
        while view:  # one call for regular files in practice; loop for the pathological short write
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        for r in records:
            self.entries[r["out"]] = JournalEntry(r["image"], r["size"], r["mtime_ns"], r["sha256"])

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
