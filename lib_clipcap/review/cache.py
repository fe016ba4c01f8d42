"""On-disk cache of CLIP image features for review scans, next to the batch journal.

A re-scan after editing captions must not re-encode thousands of unchanged images: CLIP's image tower is by far the
most expensive part of scoring. Features are stored per *cache key* (the CLIP model, its weights and the exact
preprocessing: resize, crop, normalisation, dtype), one safetensors file per key in ``.clipcap-review-cache/`` of the
output root, each row keyed by the SHA-256 of the image file's bytes. So an image that changes (same name, new
pixels) gets new features, a renamed or copied image reuses them, and another model never sees this model's
features. Hashing every image on every scan would cost a read of the whole dataset, so the file also remembers each
path's size, mtime and inode with the hash it had then; an image whose stat changed is hashed again.

The file is rewritten atomically (temporary file + rename) at the end of a scan that added features, so a crash leaves
the previous cache; a cache that cannot be read is ignored (and replaced), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_DIR = ".clipcap-review-cache"
_VERSION = 1


def cache_key(clip: Any) -> str:
    """A short hash naming everything that decides an image's features: backbone, weights, preprocessing, dtype."""
    weights = str(getattr(clip, "pretrained", ""))
    try:  # a local weights file: its size and mtime too, so retrained weights under the same name do not match
        st = os.stat(weights)
        weights += f"|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        pass
    blob = json.dumps({"v": _VERSION, "model": str(getattr(clip, "name", "")), "weights": weights,
                       "preprocess": repr(getattr(clip, "preprocess", None)), "dtype": str(getattr(clip, "dtype", "")),
                       "dim": int(getattr(clip, "embed_dim", 0))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_digest(path: str) -> str:
    """Hex SHA-256 of a file, read in chunks (images can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """Image features of one output root for one cache key.

    Args:
        root: The output root (where the batch journal lives); the cache goes into ``root/.clipcap-review-cache``.
        key: :func:`cache_key` of the CLIP backbone.
        dim: Feature size (a stored file of another size is ignored).
    """

    def __init__(self, root: Path, key: str, dim: int) -> None:
        self.root = Path(root)
        self.key = key
        self.dim = dim
        self.path = self.root / CACHE_DIR / f"features-{key}.safetensors"
        self._rows: dict[str, Any] = {}  # sha256 -> 1-D float32 tensor
        self._stats: dict[str, tuple[int, int, int, str]] = {}  # path -> (size, mtime_ns, inode, sha256)
        self._dirty = False
        self.hits = 0
        self.misses = 0
        self._load()

    def _load(self) -> None:
        try:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                feats = f.get_tensor("features") if "features" in f.keys() else None
            hashes = json.loads(meta.get("hashes", "[]"))
            stats = json.loads(meta.get("stats", "{}"))
        except FileNotFoundError:
            return
        except Exception as e:  # noqa: BLE001 - a damaged cache is only a cache: start again
            log.warning("review cache %s is unreadable (%s); it will be rebuilt", self.path, e)
            return
        if feats is None or feats.ndim != 2 or feats.shape[1] != self.dim or feats.shape[0] != len(hashes):
            log.warning("review cache %s does not match this model; it will be rebuilt", self.path)
            return
        self._rows = {h: feats[i] for i, h in enumerate(hashes)}
        self._stats = {p: tuple(v) for p, v in stats.items() if isinstance(v, list) and len(v) == 4}

    def digest(self, path: str) -> str:
        """The SHA-256 of an image, from the remembered stat when the file has not changed since.

        Raises:
            OSError: the file cannot be read.
        """
        st = os.stat(path)
        known = self._stats.get(path)
        if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return known[3]
        sha = file_digest(path)
        self._stats[path] = (st.st_size, st.st_mtime_ns, st.st_ino, sha)
        self._dirty = True
        return sha

    def get(self, sha: str) -> Any | None:
        """The cached feature row of an image hash, or ``None``."""
        row = self._rows.get(sha)
        if row is None:
            self.misses += 1
        else:
            self.hits += 1
        return row

    def put(self, sha: str, feature: Any) -> None:
        """Remember a feature row (a 1-D tensor) for an image hash (written by :meth:`save`)."""
        self._rows[sha] = feature.detach().float().cpu().contiguous()
        self._dirty = True

    def save(self, keep_paths: Sequence[str] | None = None) -> None:
        """Write the cache atomically if anything changed; failures are logged, not raised (it is only a cache).

        Args:
            keep_paths: When given, stat memos of other paths are dropped (files deleted since), and so are features
                no remembered path uses any more, so the file does not grow for ever.
        """
        if not self._dirty:
            return
        import torch
        from safetensors.torch import save

        from ..fileio import atomic_write_bytes

        if keep_paths is not None:
            keep = set(keep_paths)
            self._stats = {p: v for p, v in self._stats.items() if p in keep}
            used = {v[3] for v in self._stats.values()}
            self._rows = {h: r for h, r in self._rows.items() if h in used}
        hashes: list[str] = list(self._rows)
        feats = (torch.stack([self._rows[h] for h in hashes]) if hashes
                 else torch.empty(0, self.dim, dtype=torch.float32))
        meta = {"hashes": json.dumps(hashes), "stats": json.dumps({p: list(v) for p, v in self._stats.items()}),
                "key": self.key, "version": str(_VERSION)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, save({"features": feats.contiguous()}, metadata=meta))
            self._dirty = False
        except OSError as e:
            log.warning("cannot write the review cache %s (%s); scans will re-encode images", self.path, e)
