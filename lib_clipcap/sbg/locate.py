"""Where a registry SBG model's files are (torch-free, so ``python -m lib_clipcap models`` stays instant)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ClipCapError, MissingFileError


def default_cache_dir(models_dir: str | Path | None = None) -> Path:
    """Where SBG text features are cached: ``<models_dir>/cache/sbg-text-features``."""
    from .. import hub

    base = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
    return base / "cache" / "sbg-text-features"


def resolve_generator_folder(entry, models_dir: Path, *, download: bool = True) -> Path:
    """The local generator folder of a registry SBG entry (``download=False``: never touch the network).

    ``bundled``: a folder inside the package. ``manual``: ``<models_dir>/<filename>/`` (a folder the user puts
    there). ``hub``: ``<models_dir>/<repo>/`` with the folder's files downloaded there.

    Raises:
        MissingFileError: the folder or its files are missing (the message says where to get them and put them).
    """
    from .. import hub
    from ..registry import package_path

    src = entry.source
    needed = ["config.json", "model.safetensors"]
    if src.type == "bundled":
        folder = package_path(src.path or "")
        if not all((folder / f).is_file() for f in needed):
            raise MissingFileError(f"bundled SBG generator {folder} of {entry.name!r} is incomplete (needs "
                                   f"{', '.join(needed)}); rebuild it with tools/build_sbg_fixtures.py")
        return folder
    if src.type == "manual":
        folder = models_dir / (src.filename or "")
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            how = f" {src.instructions}" if src.instructions else ""
            raise MissingFileError(
                f"SBG generator {entry.name!r} is not in {folder} (missing {', '.join(missing)}). It cannot be "
                f"downloaded automatically: get it from {src.url}.{how} The folder must end up at {folder}, "
                f"holding {', '.join(needed)}.")
        return folder
    if src.type == "hub":
        sub = Path(src.filename or "").parent
        files = [str(sub / f) if str(sub) != "." else f for f in needed]
        root = hub.resolve_hub_files(src.repo or "", files, models_dir=models_dir, revision=src.revision,
                                     download=download)
        return root / sub
    raise ClipCapError(f"SBG model {entry.name!r} has an unknown source type {src.type!r}")
