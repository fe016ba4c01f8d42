"""Images on any filesystem pyarrow or fsspec can read: ``s3://``, ``gs://``, ``abfs://``, ``hdfs://``,
``file://``...

A URL input (a folder prefix or one object, given directly or as a line of a list file) is listed on the driver into
:class:`RemoteItem` s; the decode tasks read each object's bytes where they run. pyarrow's own filesystems are tried
first (``pyarrow.fs.FileSystem.from_uri``: S3, GCS, HDFS, ABFS, local), then fsspec's (any installed
implementation, e.g. ``s3fs``, ``gcsfs``, ``adlfs``, ``http``) through ``pyarrow.fs.FSSpecHandler``. Credentials come
from the usual places of each filesystem (environment, instance metadata, config files) on every node.

Captions of remote images cannot be renamed into place beside them (object stores have no atomic rename into a
folder we could lock), so they are written under ``output_dir`` (a local or shared folder), mirroring each object's
path below the URL given, or only into the manifests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from ..batch.discover import Discovery, matches
from ..batch.errors import BatchInputError
from ..batch.options import TagFailure, TagOptions
from ..batch.writer import sidecar_name
from ..images import is_image_path


@dataclass(frozen=True)
class RemoteItem:
    """One image behind a URL, with what the listing said about it (for the journal).

    Has the interface of :class:`~lib_clipcap.batch.discover.Item` that planning and writing use.
    """

    path: str  # the object's URL
    root: str  # the URL it was found under (a folder prefix, or its own "folder" when given directly)
    size: int
    mtime_ns: int

    @property
    def rel(self) -> PurePosixPath:
        """The object's path below ``root``."""
        return PurePosixPath(self.path[len(self.root):].lstrip("/"))

    def stat(self) -> Any:
        """``st_size`` and ``st_mtime_ns`` as listed."""
        return SimpleNamespace(st_size=self.size, st_mtime_ns=self.mtime_ns)

    def caption_path(self, caption_ext: str, output_dir: Path | None) -> Path:
        """``<output_dir>/<rel folder>/<name><caption_ext>``.

        Raises:
            BatchInputError: no ``output_dir`` (remote images get no sidecar beside them).
        """
        if output_dir is None:
            raise BatchInputError(f"{self.path} is not on a local filesystem: its caption needs an output folder "
                                  f"(--output-dir), or use --no-sidecars with --manifest-parquet")
        rel = self.rel
        return Path(output_dir) / Path(*rel.parent.parts) / sidecar_name(rel.name, caption_ext)


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path


@functools.lru_cache(maxsize=64)
def _filesystem_at(base: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, its path of base + "/")`` for ``scheme://netloc``, cached per process."""
    from pyarrow import fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(base + "/")
    except Exception:  # noqa: BLE001 - pyarrow does not know the scheme (or lacks the support): try fsspec
        try:
            import fsspec
        except ImportError as e:
            raise BatchInputError(f"cannot open {base}: pyarrow does not support it and fsspec is not installed "
                                  f"(pip install fsspec and the filesystem's package, e.g. s3fs)") from e
        try:
            ffs, path = fsspec.core.url_to_fs(base + "/")
        except Exception as e:  # noqa: BLE001 - unknown protocol, missing implementation package...
            raise BatchInputError(f"cannot open {base}: {e}") from e
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(ffs))
    return fs, path


def filesystem(url: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path on it)`` for a URL.

    Raises:
        BatchInputError: no filesystem implementation for the URL's scheme.
    """
    base, rest = _split(url)
    fs, root = _filesystem_at(base)
    if not rest.strip("/"):
        return fs, root
    return fs, root.rstrip("/") + "/" + rest.lstrip("/")


def read_bytes(url: str) -> bytes:
    """The whole object behind ``url``.

    Raises:
        OSError, BatchInputError: it cannot be read (the caller fails that one image).
    """
    fs, path = filesystem(url)
    with fs.open_input_stream(path) as f:
        return f.read()


def _mtime_ns(info: Any) -> int:
    value = getattr(info, "mtime_ns", None)
    return int(value) if value is not None else 0


def make_lister(options: TagOptions):
    """A :data:`~lib_clipcap.batch.discover.RemoteLister` for ``options`` (recursion, include / exclude globs)."""

    def list_url(url: str, listed_in: Path | None) -> Discovery:
        from pyarrow import fs as pafs

        out = Discovery()
        try:
            fs, path = filesystem(url)
            info = fs.get_file_info(path)
        except (OSError, BatchInputError) as e:
            if listed_in is None:
                raise BatchInputError(f"cannot open {url}: {e}") from e
            out.failures.append(TagFailure(url, f"listed in {listed_in} but cannot be opened: {e}"))
            return out
        if info.type == pafs.FileType.NotFound:
            if listed_in is None:
                raise BatchInputError(f"input not found: {url}; check the URL (folders/prefixes and image objects "
                                      f"are accepted)")
            out.failures.append(TagFailure(url, f"listed in {listed_in} but not found"))
            return out
        if info.type == pafs.FileType.File:
            root = url.rsplit("/", 1)[0]
            out.items.append(RemoteItem(url, root, int(info.size or 0), _mtime_ns(info)))
            return out
        base = url.rstrip("/")
        prefix = path.rstrip("/") + "/"
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=options.recursive))
        except OSError as e:
            out.failures.append(TagFailure(url, f"cannot list the folder: {e}"))
            return out
        for fi in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
            rel = fi.path[len(prefix):] if fi.path.startswith(prefix) else fi.base_name
            if not is_image_path(fi.base_name):
                continue
            if options.include and not matches(rel, options.include):
                continue
            if options.exclude and matches(rel, options.exclude):
                continue
            out.items.append(RemoteItem(f"{base}/{rel}", base, int(fi.size or 0), _mtime_ns(fi)))
        return out

    return list_url
