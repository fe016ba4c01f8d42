"""Known captioning models, kept as data in ``models.json`` beside this module.

Adding a model means adding a JSON entry, not code. The file is read once (cached) and validated, so a typo in an entry
fails loudly with the entry and field named instead of surfacing later as a confusing load error.

Schema of ``models.json`` (``"schema": 1``)::

    {
      "schema": 1,
      "gpt2_bases": {                       # base GPT-2 checkpoints/tokenizers, referenced by name
        "<name>": {
          "repo": "<hub repo id>",           # e.g. "openai-community/gpt2"
          "revision": "<git revision>",      # optional, default "main"
          "files": ["config.json", ...],     # what a GPT-2 model folder needs
          "tokenizer_files": ["vocab.json", "merges.txt"]   # what the tokenizer alone needs
        }
      },
      "models": [
        {
          "name": "<unique name>",           # matched case-insensitively
          "kind": "clipcap" | "sbg",
          "description": "<one line for humans>",
          "source": <source>,                # where the checkpoint comes from, see below
          "clip": {"model": "<open_clip model name>",
                   "pretrained": "<open_clip tag, or bundled:<path relative to lib_clipcap>>"},
          "normalize": true | false,         # L2-normalise CLIP image features before the mapper
          "prefix_length": <int > 0>,        # number of GPT-2 prefix embeddings (required for clipcap)
          "mapping": "mlp" | "transformer",  # mapping network type (required for clipcap)
          "tokenizer": "<gpt2 base name>" | "bundled:<relpath>",
          "gpt2": "<gpt2 base name>",        # base GPT-2 used when the checkpoint lacks GPT weights
          "vocabulary": "<name> | bundled:<relpath>",   # optional, SBG only: keyword vocabulary (default "natural")
          "license": "<text>",
          "paper": "<citation text>"
        }
      ]
    }

Source types:

- ``{"type": "hub", "repo": ..., "filename": ..., "revision": ..., "sha256": null | "<64 hex>"}``: a file in a
  Hugging Face Hub repository (downloaded by :mod:`lib_clipcap.hub`).
- ``{"type": "manual", "filename": ..., "url": <page where a human downloads it>, "instructions": ...}``: a file
  the user must fetch by hand (e.g. from Google Drive) and drop into the models folder. ``sha256`` is optional.
- ``{"type": "bundled", "path": <path relative to the lib_clipcap package dir>}``: shipped inside the package.
  ``sha256`` is optional.

SBG generators are folders (an HF-format GPT-2: ``config.json`` + ``model.safetensors``): for them ``path`` (bundled)
and ``filename`` (manual: a folder name inside the models folder) name that folder; see
:func:`lib_clipcap.hub.resolve_generator_folder`.

Bundled files are *not* required to exist when the registry is loaded: a missing one is reported only when the model
is resolved (see :func:`lib_clipcap.hub.resolve_model_file`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ClipCapError, MissingFileError, UnknownModelError

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLED_PREFIX",
    "DEFAULT_MODEL",
    "KINDS",
    "MAPPINGS",
    "SCHEMA_VERSION",
    "SOURCE_TYPES",
    "ClipSpec",
    "ModelEntry",
    "ModelSource",
    "get_model",
    "gpt2_base",
    "list_gpt2_bases",
    "list_models",
    "package_path",
]

SCHEMA_VERSION = 1
DEFAULT_MODEL = "flickr8k"
BUNDLED_PREFIX = "bundled:"
KINDS = ("clipcap", "sbg")
MAPPINGS = ("mlp", "transformer")
SOURCE_TYPES = ("hub", "manual", "bundled")

# Module attribute (not a constant baked into the cached loader) so tests can point it at another file; the cache is
# keyed by the path, so a monkeypatched path is read afresh.
_MODELS_JSON = Path(__file__).resolve().parent / "models.json"
_PACKAGE_DIR = Path(__file__).resolve().parent
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's checkpoint comes from.

    Only the fields relevant to ``type`` are set: ``repo``/``filename``/``revision`` for ``hub``,
    ``filename``/``url``/``instructions`` for ``manual``, ``path`` for ``bundled``. ``sha256`` (lower-case hex) is
    verified after download or when a local copy is found, where known.
    """

    type: str
    repo: str | None = None
    filename: str | None = None
    revision: str = "main"
    sha256: str | None = None
    url: str | None = None
    instructions: str | None = None
    path: str | None = None

    @property
    def download_url(self) -> str | None:
        """The direct download URL of a hub file (``https://huggingface.co/<repo>/resolve/<rev>/<file>``), else None."""
        if self.type != "hub" or not self.repo or not self.filename:
            return None
        return hub_resolve_url(self.repo, self.filename, self.revision)


@dataclass(frozen=True)
class ClipSpec:
    """The CLIP backbone a model was trained on: an open_clip model name and its pretrained tag or bundled file."""

    model: str
    pretrained: str

    @property
    def is_bundled(self) -> bool:
        """True when ``pretrained`` names a file shipped inside the package (``bundled:<relpath>``)."""
        return self.pretrained.startswith(BUNDLED_PREFIX)


@dataclass(frozen=True)
class ModelEntry:
    """One known model, as described in ``models.json`` (see the module docstring for the meaning of each field)."""

    name: str
    kind: str
    description: str
    source: ModelSource
    clip: ClipSpec
    normalize: bool
    prefix_length: int | None
    mapping: str | None
    tokenizer: str
    gpt2: str
    license: str
    paper: str
    vocabulary: str | None = None  # SBG keyword vocabulary: a built-in name or "bundled:<relpath>"


@dataclass(frozen=True)
class _Registry:
    models: tuple[ModelEntry, ...]
    by_key: dict[str, ModelEntry]  # lower-cased name -> entry
    gpt2_bases: dict[str, dict[str, Any]]


def hub_resolve_url(repo: str, filename: str, revision: str = "main") -> str:
    """Return the direct download URL of a file in a Hugging Face Hub model repository.

    Args:
        repo: Repository id, e.g. ``"Anshler/clip-prefix"``.
        filename: Path of the file inside the repository.
        revision: Branch, tag or commit.

    Returns:
        ``https://huggingface.co/<repo>/resolve/<revision>/<filename>``.
    """
    return f"https://huggingface.co/{repo}/resolve/{revision}/{filename}"


def package_path(rel: str) -> Path:
    """Resolve a path shipped inside the ``lib_clipcap`` package.

    Args:
        rel: A path relative to the package directory, with or without the ``bundled:`` prefix
            (``"assets/shapes/clip.safetensors"`` or ``"bundled:assets/shapes/clip.safetensors"``).

    Returns:
        The absolute path. It is not required to exist.

    Raises:
        ClipCapError: If ``rel`` is empty, absolute, or escapes the package directory (``..``): bundled paths come
            from data files, and must never point elsewhere on the user's disk.
    """
    if rel.startswith(BUNDLED_PREFIX):
        rel = rel[len(BUNDLED_PREFIX):]
    rel = rel.strip()
    if not rel:
        raise ClipCapError("Empty bundled path.")
    rel_path = Path(rel)
    if rel_path.is_absolute() or rel_path.drive:
        raise ClipCapError(f"Bundled path {rel!r} must be relative to the lib_clipcap package directory.")
    resolved = (_PACKAGE_DIR / rel_path).resolve()
    try:
        resolved.relative_to(_PACKAGE_DIR)
    except ValueError:
        raise ClipCapError(f"Bundled path {rel!r} points outside the lib_clipcap package directory.") from None
    return resolved


# ----------------------------------------------------------------------------------------------------------------------
# Loading and validation


def _field_error(where: str, field: str, problem: str) -> ClipCapError:
    return ClipCapError(f"{_MODELS_JSON.name}: {where}: field {field!r} {problem}")


def _req_str(obj: dict[str, Any], field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _field_error(where, field, f"must be a non-empty string (got {value!r})")
    return value


def _opt_str(obj: dict[str, Any], field: str, where: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _field_error(where, field, f"must be a non-empty string or null (got {value!r})")
    return value


def _parse_sha256(obj: dict[str, Any], where: str) -> str | None:
    value = _opt_str(obj, "sha256", where)
    if value is None:
        return None
    value = value.strip().lower()
    if not _SHA256_RE.match(value):
        raise _field_error(where, "sha256", f"must be 64 hexadecimal digits or null (got {obj.get('sha256')!r})")
    return value


def _parse_source(raw: Any, where: str) -> ModelSource:
    if not isinstance(raw, dict):
        raise _field_error(where, "source", f"must be an object (got {raw!r})")
    where = f"{where} source"
    stype = raw.get("type")
    if stype not in SOURCE_TYPES:
        raise _field_error(where, "type", f"must be one of {', '.join(SOURCE_TYPES)} (got {stype!r})")
    sha = _parse_sha256(raw, where)
    if stype == "hub":
        filename = _req_str(raw, "filename", where)
        # Hub files may sit in repo sub-folders, but must stay inside the local folder they are downloaded to.
        if Path(filename).is_absolute() or ".." in Path(filename).parts or "\\" in filename:
            raise _field_error(where, "filename", f"must be a relative path inside the repository (got {filename!r})")
        return ModelSource(
            type="hub",
            repo=_req_str(raw, "repo", where),
            filename=filename,
            revision=_opt_str(raw, "revision", where) or "main",
            sha256=sha,
        )
    if stype == "manual":
        filename = _req_str(raw, "filename", where)
        # The file lands directly in the models folder: a path component would let data choose another folder.
        if Path(filename).name != filename:
            raise _field_error(where, "filename", f"must be a plain file name without folders (got {filename!r})")
        return ModelSource(
            type="manual",
            filename=filename,
            url=_req_str(raw, "url", where),
            instructions=_opt_str(raw, "instructions", where),
            sha256=sha,
        )
    path = _req_str(raw, "path", where)
    try:
        package_path(path)
    except ClipCapError as e:
        raise _field_error(where, "path", str(e)) from None
    return ModelSource(type="bundled", path=path, sha256=sha)


def _parse_clip(raw: Any, where: str) -> ClipSpec:
    if not isinstance(raw, dict):
        raise _field_error(where, "clip", f"must be an object with 'model' and 'pretrained' (got {raw!r})")
    where = f"{where} clip"
    spec = ClipSpec(model=_req_str(raw, "model", where), pretrained=_req_str(raw, "pretrained", where))
    if spec.is_bundled:
        try:
            package_path(spec.pretrained)
        except ClipCapError as e:
            raise _field_error(where, "pretrained", str(e)) from None
    return spec


def _parse_gpt2_bases(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ClipCapError(f"{_MODELS_JSON.name}: 'gpt2_bases' must be an object mapping names to repos.")
    bases: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        where = f"gpt2_bases[{name!r}]"
        if not isinstance(spec, dict):
            raise ClipCapError(f"{_MODELS_JSON.name}: {where} must be an object.")
        files = spec.get("files")
        tok_files = spec.get("tokenizer_files")
        for field, value in (("files", files), ("tokenizer_files", tok_files)):
            if not isinstance(value, list) or not value or not all(isinstance(f, str) and f for f in value):
                raise _field_error(where, field, f"must be a non-empty list of file names (got {value!r})")
        bases[name] = {
            "repo": _req_str(spec, "repo", where),
            "revision": _opt_str(spec, "revision", where) or "main",
            "files": list(files),
            "tokenizer_files": list(tok_files),
        }
    return bases


_ENTRY_FIELDS = frozenset(
    {"name", "kind", "description", "source", "clip", "normalize", "prefix_length", "mapping", "tokenizer", "gpt2",
     "license", "paper", "vocabulary"}
)


def _parse_entry(raw: Any, index: int, bases: dict[str, dict[str, Any]]) -> ModelEntry:
    if not isinstance(raw, dict):
        raise ClipCapError(f"{_MODELS_JSON.name}: models[{index}] must be an object (got {type(raw).__name__}).")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _field_error(f"models[{index}]", "name", f"must be a non-empty string (got {name!r})")
    where = f"model {name!r}"

    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        # Not fatal (a newer file may carry extra data), but a misspelt optional field would otherwise go unnoticed.
        logger.warning("%s: %s has unknown field(s) %s; ignored.", _MODELS_JSON.name, where, ", ".join(unknown))

    kind = raw.get("kind")
    if kind not in KINDS:
        raise _field_error(where, "kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")

    normalize = raw.get("normalize")
    if not isinstance(normalize, bool):  # an int 0/1 is almost certainly a mistake in hand-written JSON
        raise _field_error(where, "normalize", f"must be true or false (got {normalize!r})")

    prefix_length = raw.get("prefix_length")
    mapping = raw.get("mapping")
    # SBG generators have no mapping network, so these two are only mandatory for ClipCap models.
    if prefix_length is not None or kind == "clipcap":
        if isinstance(prefix_length, bool) or not isinstance(prefix_length, int) or prefix_length <= 0:
            raise _field_error(where, "prefix_length", f"must be a positive integer (got {prefix_length!r})")
    if mapping is not None or kind == "clipcap":
        if mapping not in MAPPINGS:
            raise _field_error(where, "mapping", f"must be one of {', '.join(MAPPINGS)} (got {mapping!r})")

    tokenizer = _req_str(raw, "tokenizer", where)
    if tokenizer.startswith(BUNDLED_PREFIX):
        try:
            package_path(tokenizer)
        except ClipCapError as e:
            raise _field_error(where, "tokenizer", str(e)) from None
    elif tokenizer not in bases:
        known = ", ".join(bases) or "none defined"
        raise _field_error(
            where, "tokenizer", f"must be 'bundled:<path>' or a gpt2_bases name ({known}); got {tokenizer!r}"
        )
    gpt2 = _req_str(raw, "gpt2", where)
    if gpt2 not in bases:
        known = ", ".join(bases) or "none defined"
        raise _field_error(where, "gpt2", f"must name an entry of gpt2_bases ({known}); got {gpt2!r}")

    vocabulary = _opt_str(raw, "vocabulary", where)
    if vocabulary is not None and kind != "sbg":
        raise _field_error(where, "vocabulary", f"is only meaningful for kind 'sbg' (got kind {kind!r})")
    if vocabulary is not None and vocabulary.startswith(BUNDLED_PREFIX):
        try:
            package_path(vocabulary)
        except ClipCapError as e:
            raise _field_error(where, "vocabulary", str(e)) from None

    return ModelEntry(
        name=name.strip(),
        kind=kind,
        description=_req_str(raw, "description", where),
        source=_parse_source(raw.get("source"), where),
        clip=_parse_clip(raw.get("clip"), where),
        normalize=normalize,
        prefix_length=prefix_length,
        mapping=mapping,
        tokenizer=tokenizer,
        gpt2=gpt2,
        license=_req_str(raw, "license", where),
        paper=_req_str(raw, "paper", where),
        vocabulary=vocabulary,
    )


@functools.lru_cache(maxsize=4)
def _load(path: str) -> _Registry:
    """Read and validate a registry file. Cached per path: the file ships with the package and does not change."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise MissingFileError(
            f"Model registry {path} cannot be read ({e}); the lib_clipcap install is incomplete."
        ) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClipCapError(f"Model registry {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ClipCapError(f"Model registry {path} must contain a JSON object.")
    if data.get("schema") != SCHEMA_VERSION:
        raise ClipCapError(
            f"Model registry {path} has schema {data.get('schema')!r}; this lib_clipcap reads schema {SCHEMA_VERSION}."
        )
    bases = _parse_gpt2_bases(data.get("gpt2_bases"))
    raw_models = data.get("models")
    if not isinstance(raw_models, list):
        raise ClipCapError(f"Model registry {path}: 'models' must be a list.")

    models: list[ModelEntry] = []
    by_key: dict[str, ModelEntry] = {}
    for i, raw in enumerate(raw_models):
        entry = _parse_entry(raw, i, bases)
        key = entry.name.lower()
        if key in by_key:  # names are matched case-insensitively, so they must be unique that way too
            raise _field_error(f"models[{i}]", "name", f"duplicates {by_key[key].name!r} (names are case-insensitive)")
        by_key[key] = entry
        models.append(entry)
    logger.debug("Loaded %d models from %s", len(models), path)
    return _Registry(models=tuple(models), by_key=by_key, gpt2_bases=bases)


def _registry() -> _Registry:
    return _load(str(_MODELS_JSON))


# ----------------------------------------------------------------------------------------------------------------------
# Public queries


def list_models(kind: str | None = None) -> list[str]:
    """List the names of the known models, in registry order.

    Args:
        kind: Only models of this kind (``"clipcap"`` or ``"sbg"``); all when None.

    Returns:
        Model names as spelled in the registry.

    Raises:
        ClipCapError: If ``kind`` is not a known kind, or the registry file is malformed.
    """
    if kind is not None and kind not in KINDS:
        raise ClipCapError(f"Unknown model kind {kind!r}; valid kinds: {', '.join(KINDS)}.")
    return [m.name for m in _registry().models if kind is None or m.kind == kind]


def get_model(name: str) -> ModelEntry:
    """Look up a model by name (case-insensitive, surrounding spaces ignored).

    Args:
        name: A registry name such as ``"flickr8k"``.

    Returns:
        The model's entry.

    Raises:
        UnknownModelError: If no model has that name; the message lists the valid names and close matches.
        ClipCapError: If the registry file is malformed.
    """
    reg = _registry()
    key = str(name).strip().lower()
    entry = reg.by_key.get(key)
    if entry is not None:
        return entry
    import difflib  # error path only: keep it out of import time

    valid = [m.name for m in reg.models]
    close = difflib.get_close_matches(key, list(reg.by_key), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(reg.by_key[c].name) for c in close)}?" if close else ""
    raise UnknownModelError(f"Unknown model {name!r}.{hint} Valid models: {', '.join(valid)}.")


def list_gpt2_bases() -> list[str]:
    """List the names of the known GPT-2 bases (``gpt2_bases`` in the registry).

    Returns:
        Base names, e.g. ``["gpt2"]``.

    Raises:
        ClipCapError: If the registry file is malformed.
    """
    return list(_registry().gpt2_bases)


def gpt2_base(name: str) -> dict[str, Any]:
    """Describe a base GPT-2 (model and tokenizer files on the hub).

    Args:
        name: A ``gpt2_bases`` name, e.g. ``"gpt2"``.

    Returns:
        A fresh dict ``{"repo", "revision", "files", "tokenizer_files"}`` (safe to modify).

    Raises:
        UnknownModelError: If there is no such base; the message lists the valid names.
        ClipCapError: If the registry file is malformed.
    """
    bases = _registry().gpt2_bases
    spec = bases.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, list(bases), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"Unknown GPT-2 base {name!r}.{hint} Valid bases: {', '.join(bases) or 'none'}.")
    return {
        "repo": spec["repo"],
        "revision": spec["revision"],
        "files": list(spec["files"]),
        "tokenizer_files": list(spec["tokenizer_files"]),
    }
