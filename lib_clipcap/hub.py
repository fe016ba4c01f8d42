"""The one place that finds model files on disk and downloads the missing ones.

Layout of the models folder (``default_models_dir()`` unless the caller passes another, e.g. the WebUI's
``<models_path>/clipcap``)::

    <models_dir>/
        coco_weights.pt                      # "manual" sources: dropped here by the user
        Anshler__clip-prefix/flickr8k.pt     # "hub" sources: <repo with "/" replaced by "__">/<filename>
        openai-community__gpt2/config.json   # GPT-2 bases and tokenizers, same rule

Hub files are downloaded with ``huggingface_hub.hf_hub_download(..., local_dir=<that folder>)``, so they are plain
files a user can also copy in by hand (checked first, without touching the network), and an interrupted download
resumes from huggingface_hub's ``.incomplete`` file on the next attempt. Offline mode (``HF_HUB_OFFLINE`` or
``CLIPCAP_OFFLINE``) never touches the network; every "missing" error names the file, the folder to put it in and
where to get it.

``huggingface_hub`` is imported only when a download is actually needed, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ClipCapError, MissingFileError, UnknownModelError
from .registry import BUNDLED_PREFIX, ModelEntry, gpt2_base, hub_resolve_url, list_gpt2_bases, package_path

logger = logging.getLogger(__name__)

__all__ = [
    "MODELS_DIR_ENV",
    "OFFLINE_ENVS",
    "default_models_dir",
    "hub_folder",
    "is_offline",
    "resolve_hub_files",
    "resolve_local_or_hub",
    "resolve_model_file",
    "resolve_model_files",
    "sha256_file",
    "verify_sha256",
]

MODELS_DIR_ENV = "CLIPCAP_MODELS_DIR"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "CLIPCAP_OFFLINE")
_TRUTHY = frozenset({"1", "true", "yes"})
_PROGRESS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"
_CHUNK = 1024 * 1024  # 1 MiB: large enough for speed, small enough to hash 600 MB checkpoints in constant memory

# Serialises the temporary change of the process-wide progress-bar setting (environment + huggingface_hub's switch):
# two overlapping calls would otherwise restore each other's state in the wrong order.
_PROGRESS_LOCK = threading.Lock()

# (resolved path, size, mtime_ns) -> sha256 hex. Hashing a 600 MB checkpoint takes seconds; an unchanged file is not
# re-hashed every time a model is loaded in the same process.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_CACHE_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------------------------------
# Settings


def default_models_dir() -> Path:
    """Return the folder where models are looked for and downloaded to when the caller gives none.

    ``$CLIPCAP_MODELS_DIR`` when set (``~`` expanded), else ``~/.cache/clipcap``. Never the working directory: a
    WebUI's working directory is the host's install folder, and files must not be scattered there.

    Returns:
        An absolute path. It is not created here.
    """
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (some containers)
        home = None
    if home is None or not home.is_absolute():
        import tempfile  # rare path; kept out of module import time

        # A relative "home" would silently mean the working directory; a temp folder is the lesser evil.
        fallback = Path(tempfile.gettempdir()) / "clipcap"
        logger.warning("Home directory unknown; using %s for models (set %s to choose).", fallback, MODELS_DIR_ENV)
        return fallback
    return home / ".cache" / "clipcap"


def is_offline() -> bool:
    """Tell whether downloads are forbidden by the environment.

    Returns:
        True if ``HF_HUB_OFFLINE`` or ``CLIPCAP_OFFLINE`` is ``1``, ``true`` or ``yes`` (any case). Read on every call
        (unlike huggingface_hub, which reads ``HF_HUB_OFFLINE`` once at import), so a later change takes effect.
    """
    return any(os.environ.get(name, "").strip().lower() in _TRUTHY for name in OFFLINE_ENVS)


def hub_folder(repo: str, models_dir: Path | None = None) -> Path:
    """Return the local folder of a hub repository: ``<models_dir>/<repo with "/" replaced by "__">``.

    Args:
        repo: Repository id such as ``"Anshler/clip-prefix"``.
        models_dir: The models folder; ``default_models_dir()`` when None.

    Returns:
        The folder path (not created).
    """
    base = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    return base / repo.strip("/").replace("/", "__")


# ----------------------------------------------------------------------------------------------------------------------
# Checksums


def sha256_file(path: Path) -> str:
    """Hash a file with SHA-256, streaming it in 1 MiB chunks (constant memory for multi-GB checkpoints).

    Args:
        path: The file.

    Returns:
        The lower-case hex digest.

    Raises:
        OSError: If the file cannot be read.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_CACHE_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_CACHE_LOCK:
        _HASH_CACHE[key] = digest
    return digest


def verify_sha256(path: Path, expected: str | None) -> None:
    """Check a file against a known SHA-256; do nothing when ``expected`` is None.

    The file is never deleted on mismatch: it may be a user's own copy, and deleting a 600 MB download on a hunch is
    worse than asking the user to look.

    Args:
        path: The file to check.
        expected: Hex digest (any case), or None when unknown.

    Raises:
        ClipCapError: If the digests differ; the message names the file and both hashes.
    """
    if not expected:
        return
    expected = expected.strip().lower()
    actual = sha256_file(path)
    if actual != expected:
        raise ClipCapError(
            f"Checksum mismatch for {path}: expected sha256 {expected}, got {actual}. The file was left in place; it "
            f"is corrupt, truncated or a different version. Delete it to download it again, or replace it with the "
            f"right file."
        )
    logger.debug("sha256 verified for %s", path)


# ----------------------------------------------------------------------------------------------------------------------
# huggingface_hub glue (imported lazily)


def _hf_version() -> tuple[int, int]:
    import huggingface_hub

    m = re.match(r"(\d+)\.(\d+)", getattr(huggingface_hub, "__version__", "") or "")
    return (int(m.group(1)), int(m.group(2))) if m else (999, 0)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Disable huggingface_hub's progress bars for the duration of the block when ``enabled`` is False."""
    if enabled:
        yield
        return
    # Import before touching the environment: huggingface_hub reads HF_HUB_DISABLE_PROGRESS_BARS once at import, and
    # importing it inside the block would disable its bars for the rest of the process.
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:  # very old huggingface_hub: only the environment variable is available
        are_progress_bars_disabled = disable_progress_bars = enable_progress_bars = None  # type: ignore[assignment]
    with _PROGRESS_LOCK:
        old_env = os.environ.get(_PROGRESS_ENV)
        os.environ[_PROGRESS_ENV] = "1"
        switched = False
        try:
            if are_progress_bars_disabled is not None and not are_progress_bars_disabled():
                disable_progress_bars()
                switched = True
            yield
        finally:
            if switched and enable_progress_bars is not None:
                enable_progress_bars()
            if old_env is None:
                os.environ.pop(_PROGRESS_ENV, None)
            else:
                os.environ[_PROGRESS_ENV] = old_env


def _download(repo: str, filename: str, revision: str, folder: Path, progress: bool) -> Path:
    """Download one file into ``folder`` with huggingface_hub; exceptions propagate to the caller."""
    import huggingface_hub

    fn = huggingface_hub.hf_hub_download  # looked up at call time so tests can replace it
    kwargs: dict[str, Any] = {}
    if _hf_version() < (0, 23):
        import inspect  # only for old huggingface_hub; inspect is slow to import

        # Before 0.23, local_dir defaulted to symlinks into the global cache and did not resume; later versions always
        # write real files and resume, and warn if these (deprecated, then removed) arguments are passed.
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        if "local_dir_use_symlinks" in params:
            kwargs["local_dir_use_symlinks"] = False
        if "resume_download" in params:
            kwargs["resume_download"] = True
    logger.info("Downloading %s from %s (revision %s) to %s", filename, repo, revision, folder)
    with _progress_bars(progress):
        result = fn(repo_id=repo, filename=filename, revision=revision, local_dir=str(folder), **kwargs)
    path = Path(str(result))
    return path if path.is_file() else folder / filename


_REACH_CACHE: dict[str, tuple[float, str | None]] = {}


def _first_hop(endpoint: str) -> tuple[str, int, str]:
    """``(host, port, what)`` of the first connection a download to ``endpoint`` makes: the proxy named by
    ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (as huggingface_hub's HTTP client honours them, ``NO_PROXY``
    included), else the hub itself."""
    import urllib.request
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # the *_PROXY variables (any case), or the OS settings
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == "https" else 80), "proxy "
    return host, port, ""


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (no DNS, no route, proxy down...), or None if a TCP connection works.

    huggingface_hub retries failed connections for half a minute or more, even when the name does not resolve;
    without any network (a common case for this tool: air-gapped GPU boxes, CI) one quick probe of the first hop
    (the configured proxy, or the hub: :func:`_first_hop`) lets us say so at once. Cached for a minute per hop.
    """
    import socket
    import time

    host, port, what = _first_hop(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    now = time.monotonic()
    cached = _REACH_CACHE.get(f"{host}:{port}")
    if cached and now - cached[0] < 60:
        return cached[1]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            reason = None
    except OSError as e:
        reason = f"{what}{host}:{port}: {e.strerror or e}"
    _REACH_CACHE[f"{host}:{port}"] = (now, reason)
    return reason


def _get_advice(repo: str, filename: str, revision: str, folder: Path) -> str:
    url = hub_resolve_url(repo, filename, revision)
    return (
        f"Download {url} and save it as {folder / filename}, or run: "
        f'hf download {repo} {filename} --revision {revision} --local-dir "{folder}" '
        f"(older huggingface_hub: huggingface-cli download ...)."
    )


def _why_not(download: bool) -> str:
    """Why nothing was downloaded, for error messages (callers only ask when offline or download is False)."""
    if is_offline():
        set_vars = [n for n in OFFLINE_ENVS if os.environ.get(n, "").strip().lower() in _TRUTHY]
        return f"downloads are off (offline mode: {', '.join(set_vars)} set)"
    if not download:
        return "downloads are off (download=False)"
    return "downloads are off"  # pragma: no cover


def _resolve_hub_file(
    repo: str,
    filename: str,
    revision: str,
    folder: Path,
    *,
    download: bool,
    progress: bool,
    sha256: str | None = None,
    label: str | None = None,
) -> Path:
    """Find ``folder/filename`` or download it there; verify ``sha256`` when given."""
    target = folder / filename
    if target.is_file():
        # A plain file already present wins, whether downloaded earlier or copied in by hand: no network round-trip.
        logger.debug("Found %s", target)
        verify_sha256(target, sha256)
        return target
    where = f"{label or f'File {filename!r}'} (Hugging Face repo {repo!r}, revision {revision!r})"
    if is_offline() or not download:
        raise MissingFileError(
            f"{where} is not in {folder}, and {_why_not(download)}. {_get_advice(repo, filename, revision, folder)}"
        )
    unreachable = _hub_unreachable()
    if unreachable:
        raise MissingFileError(
            f"{where} is not in {folder}, and the hub cannot be reached ({unreachable}). "
            f"{_get_advice(repo, filename, revision, folder)}"
        )
    try:
        path = _download(repo, filename, revision, folder, progress)
    except Exception as e:  # network, HTTP, auth, disk: all leave the user with the same remedy
        # huggingface_hub keeps its partial ".incomplete" file, so the next attempt resumes; nothing to clean here.
        raise MissingFileError(
            f"{where} is not in {folder}, and the download failed ({type(e).__name__}: {e}). "
            f"{_get_advice(repo, filename, revision, folder)}"
        ) from e
    verify_sha256(path, sha256)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Public resolution functions


def resolve_model_file(
    entry: ModelEntry,
    *,
    models_dir: Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Return the local path of a registry model's checkpoint, downloading it when allowed.

    - ``bundled``: the file inside the package.
    - ``manual``: ``<models_dir>/<filename>``; never downloaded (the host needs a human, e.g. Google Drive).
    - ``hub``: ``<models_dir>/<repo with / -> __>/<filename>`` if already there, else downloaded there with
      huggingface_hub (interrupted downloads resume).

    Args:
        entry: The model, from :func:`lib_clipcap.registry.get_model`.
        models_dir: The models folder; ``default_models_dir()`` when None.
        download: Allow downloading a missing hub file.
        progress: Show huggingface_hub's progress bars while downloading.

    Returns:
        Path of the checkpoint file.

    Raises:
        MissingFileError: If the file is absent and cannot be downloaded (offline, ``download=False``, manual source,
            network failure); the message names the file, the folder to put it in and where to get it.
        ClipCapError: If the file's SHA-256 is known and differs (the file is kept).
    """
    src = entry.source
    base = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    if src.type == "bundled":
        path = package_path(src.path or "")
        if not path.is_file():
            raise MissingFileError(
                f"Bundled file {path} of model {entry.name!r} is missing: the lib_clipcap install is incomplete. "
                f"Reinstall the extension or rebuild the bundled assets."
            )
        verify_sha256(path, src.sha256)
        return path
    if src.type == "manual":
        filename = src.filename or ""
        path = base / filename
        if path.is_file():
            verify_sha256(path, src.sha256)
            return path
        how = f" {src.instructions}" if src.instructions else ""
        raise MissingFileError(
            f"Model file {filename!r} for model {entry.name!r} is not in {base}. It cannot be downloaded "
            f"automatically: get it from {src.url}.{how} The file must end up at {path}."
        )
    if src.type == "hub":
        return _resolve_hub_file(
            src.repo or "",
            src.filename or "",
            src.revision,
            hub_folder(src.repo or "", base),
            download=download,
            progress=progress,
            sha256=src.sha256,
            label=f"Checkpoint {src.filename!r} of model {entry.name!r}",
        )
    raise ClipCapError(f"Model {entry.name!r} has an unknown source type {src.type!r}.")


def resolve_model_files(
    entry: ModelEntry,
    *,
    models_dir: Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Where a registry model's files are: an SBG generator's folder, else the ClipCap checkpoint file.

    The one place that knows both kinds, so "is it installed?" (``download=False``) and "get it" agree everywhere
    (CLI ``models``, the UI's model table and download button, the API's model list).

    Raises:
        MissingFileError: not installed and ``download`` is False or impossible (the message says what to do).
    """
    if entry.kind == "sbg":
        base = Path(models_dir).expanduser() if models_dir else default_models_dir()
        return resolve_generator_folder(entry, base, download=download)
    return resolve_model_file(entry, models_dir=models_dir, download=download, progress=progress)


#: The files an SBG generator folder must hold.
SBG_GENERATOR_FILES = ("config.json", "model.safetensors")


def resolve_generator_folder(entry: ModelEntry, models_dir: Path, *, download: bool = True) -> Path:
    """The local generator folder of a registry SBG entry (``download=False``: never touch the network).

    ``bundled``: a folder inside the package. ``manual``: ``<models_dir>/<filename>/`` (a folder the user puts
    there). ``hub``: ``<models_dir>/<repo>/`` with the folder's files downloaded there.

    Raises:
        MissingFileError: the folder or its files are missing (the message says where to get them and put them).
    """
    src = entry.source
    needed = list(SBG_GENERATOR_FILES)
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
        root = resolve_hub_files(src.repo or "", files, models_dir=models_dir, revision=src.revision,
                                 download=download)
        return root / sub
    raise ClipCapError(f"SBG model {entry.name!r} has an unknown source type {src.type!r}")


def resolve_hub_files(
    repo: str,
    filenames: Sequence[str],
    *,
    models_dir: Path | None = None,
    revision: str = "main",
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Make sure several files of one hub repository are present locally (e.g. a GPT-2 base or its tokenizer).

    Same rules as hub checkpoints: files already in ``<models_dir>/<repo with / -> __>/`` are used as they are; the
    others are downloaded there unless offline or ``download`` is False.

    Args:
        repo: Repository id, e.g. ``"openai-community/gpt2"``.
        filenames: Files needed from it.
        models_dir: The models folder; ``default_models_dir()`` when None.
        revision: Branch, tag or commit.
        download: Allow downloading missing files.
        progress: Show huggingface_hub's progress bars while downloading.

    Returns:
        The folder holding all of ``filenames``.

    Raises:
        MissingFileError: If any file is absent and cannot be downloaded; the message lists every missing file with
            its URL and the folder to put it in.
    """
    folder = hub_folder(repo, models_dir)
    missing = [f for f in filenames if not (folder / f).is_file()]
    if missing and (is_offline() or not download):
        # Report every missing file at once, so a user copying files by hand gets the complete list in one go.
        advice = " ".join(f"{hub_resolve_url(repo, f, revision)} -> {folder / f}." for f in missing)
        raise MissingFileError(
            f"Files {', '.join(repr(f) for f in missing)} of Hugging Face repo {repo!r} (revision {revision!r}) are "
            f"not in {folder}, and {_why_not(download)}. Download them into that folder: {advice} Or run: "
            f'hf download {repo} {" ".join(missing)} --revision {revision} --local-dir "{folder}".'
        )
    for f in missing:
        _resolve_hub_file(repo, f, revision, folder, download=download, progress=progress)
    return folder


def resolve_local_or_hub(
    spec: str,
    *,
    models_dir: Path | None = None,
    download: bool = True,
    progress: bool = True,
    tokenizer_only: bool = False,
) -> Path:
    """Turn a user- or registry-supplied reference to a GPT-2/tokenizer into a local path.

    Args:
        spec: An existing local file or folder (``~`` expanded); ``bundled:<relpath>`` inside the package; or a
            GPT-2 base name from the registry (``"gpt2"``), resolved with :func:`resolve_hub_files`.
        models_dir: The models folder for hub downloads; ``default_models_dir()`` when None.
        download: Allow downloading missing hub files.
        progress: Show huggingface_hub's progress bars while downloading.
        tokenizer_only: For a GPT-2 base, fetch only the tokenizer files (about 1.5 MB instead of 500 MB).

    Returns:
        The local file or folder.

    Raises:
        MissingFileError: If a bundled or path-like spec does not exist, or hub files are missing and cannot be
            downloaded.
        UnknownModelError: If ``spec`` is neither a path nor a known GPT-2 base; the message lists the bases.
    """
    text = str(spec).strip()
    if text.startswith(BUNDLED_PREFIX):
        path = package_path(text)
        if not path.exists():
            raise MissingFileError(
                f"Bundled file {path} ({text}) is missing: the lib_clipcap install is incomplete. Reinstall the "
                f"extension or rebuild the bundled assets."
            )
        return path
    local = Path(text).expanduser()
    if text and local.exists():
        return local
    bases = list_gpt2_bases()
    if text in bases:
        base = gpt2_base(text)
        files = base["tokenizer_files"] if tokenizer_only else base["files"] + base["tokenizer_files"]
        return resolve_hub_files(
            base["repo"], files, models_dir=models_dir, revision=base["revision"], download=download, progress=progress
        )
    # Anything that looks like a path was meant as one: say it is missing rather than "unknown base".
    if any(sep in text for sep in ("/", "\\")) or text.startswith(("~", ".")) or local.suffix:
        raise MissingFileError(f"{local} does not exist (given as {spec!r}).")
    raise UnknownModelError(
        f"{spec!r} is not an existing file or folder, a 'bundled:' path, or a known GPT-2 base "
        f"(valid bases: {', '.join(bases) or 'none'})."
    )
