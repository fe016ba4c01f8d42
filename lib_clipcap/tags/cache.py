"""On-disk cache of a tag vocabulary's CLIP text features.

Tagging a folder costs one image encoding per image plus one matrix product with the vocabulary's text features, so
those features are computed once per (vocabulary, CLIP model) and kept: in memory for the process, and on disk as one
safetensors file per key in ``<models folder>/cache/tag-text-features/`` (next to SBG's text-feature cache; the
models folder is ``$CLIPCAP_MODELS_DIR`` or ``~/.cache/clipcap``, the WebUI's ``models/clipcap``).

The key (as :mod:`lib_clipcap.review.cache` keys image features) hashes everything that decides the features:

* the vocabulary's :attr:`~lib_clipcap.tags.vocabulary.TagVocabulary.content_hash` -- every tag, alias, category
  and prompt template, in order (not its name or description: a renamed copy reuses the file);
* the CLIP text tower's identity, :func:`lib_clipcap.sbg.keywords.clip_fingerprint` (model name, weights tag, and a
  hash of the last text-tower tensors, so retrained weights or another dtype never read stale features);
* this file's format version.

The file is written atomically (temporary file + rename), so a crash leaves the previous file or none; a file that
cannot be read, or whose stored key or shape does not match, is a miss (re-encoded and replaced), never an error.
A folder that cannot be written only costs the re-encoding next time (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..fileio import cache_file_name, read_keyed_tensors, write_keyed_tensors
from .vocabulary import TagVocabulary

log = logging.getLogger(__name__)

CACHE_SUBDIR = "tag-text-features"
_VERSION = 1


def default_cache_dir(models_dir: str | Path | None = None) -> Path:
    """``<models_dir>/cache/tag-text-features`` (default models folder: :func:`lib_clipcap.hub.default_models_dir`)."""
    from ..hub import default_models_dir

    base = Path(models_dir).expanduser() if models_dir else default_models_dir()
    return base / "cache" / CACHE_SUBDIR


@dataclass(frozen=True)
class TextFeatures:
    """A vocabulary's prompts encoded by one CLIP: ``prompts`` ``[n_prompts, D]`` (L2-normalised, float32) and
    ``owner`` ``[n_prompts]``, the index of the tag (in ``vocabulary.entries``) each prompt belongs to."""

    prompts: torch.Tensor
    owner: torch.Tensor
    key: str

    def to(self, device: Any) -> TextFeatures:
        return TextFeatures(self.prompts.to(device), self.owner.to(device), self.key)


def cache_key(clip: Any, vocabulary: TagVocabulary) -> str:
    """Hex SHA-256 naming a (vocabulary content, CLIP text tower) pair; see the module docstring."""
    from ..sbg.keywords import clip_fingerprint

    blob = json.dumps({"v": _VERSION, "vocabulary": vocabulary.content_hash, "clip": clip_fingerprint(clip)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class TagTextCache:
    """Text features of tag vocabularies, in memory and (unless ``folder`` is None) on disk.

    Args:
        folder: where the safetensors files go (see :func:`default_cache_dir`); None keeps them in memory only.

    ``hits`` (memory or disk), ``misses`` and ``encode_calls`` count what happened, for tests and logs.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self._memory: dict[str, TextFeatures] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.encode_calls = 0

    def path(self, clip: Any, key: str) -> Path | None:
        """The file of ``key`` (named after the CLIP model, for people looking into the folder), or None."""
        if self.folder is None:
            return None
        return self.folder / cache_file_name(getattr(clip, "name", "clip"), key, 24)

    def get(self, clip: Any, vocabulary: TagVocabulary, *, batch_size: int = 256) -> TextFeatures:
        """The vocabulary's text features for ``clip``, on the CLIP's device: cached, or encoded and cached."""
        key = cache_key(clip, vocabulary)
        with self._lock:
            feats = self._memory.get(key)
            if feats is None:
                feats = self._read(clip, key, vocabulary)
            if feats is None:
                self.misses += 1
                feats = self._encode(clip, key, vocabulary, batch_size)
                self._write(clip, key, feats, vocabulary)
            else:
                self.hits += 1
            feats = feats.to(clip.device)
            self._memory[key] = feats
            return feats

    def _encode(self, clip: Any, key: str, vocabulary: TagVocabulary, batch_size: int) -> TextFeatures:
        prompts = vocabulary.prompts()
        self.encode_calls += 1
        log.info("encoding %d prompts of tag vocabulary %r with CLIP %s (cached afterwards)", len(prompts),
                 vocabulary.name, getattr(clip, "name", "?"))
        feats = clip.encode_texts([p for _, p in prompts], normalize=True, batch_size=batch_size).float()
        owner = torch.tensor([i for i, _ in prompts], dtype=torch.long)
        return TextFeatures(feats.cpu(), owner, key)

    def _read(self, clip: Any, key: str, vocabulary: TagVocabulary) -> TextFeatures | None:
        got = read_keyed_tensors(self.path(clip, key), key, ["prompts", "owner"])
        if got is None:
            return None
        prompts, owner = got["prompts"], got["owner"]
        n = len(vocabulary.prompts())
        if prompts.ndim != 2 or prompts.shape != (n, clip.embed_dim) or owner.shape != (n,):
            log.warning("tag text-feature cache %s does not match its vocabulary; it will be rebuilt",
                        self.path(clip, key))
            return None
        return TextFeatures(prompts.float(), owner.long(), key)

    def _write(self, clip: Any, key: str, feats: TextFeatures, vocabulary: TagVocabulary) -> None:
        meta = {"version": str(_VERSION), "clip": str(getattr(clip, "name", "")), "vocabulary": vocabulary.name,
                "vocabulary_hash": vocabulary.content_hash, "tags": str(len(vocabulary.entries))}
        write_keyed_tensors(self.path(clip, key), key, {"prompts": feats.prompts, "owner": feats.owner}, meta)
