"""The CLIP backbone: an open_clip model, its image preprocessing and its text tokenizer.

``pretrained`` may be an open_clip tag (``"openai"``, ``"laion2b_s32b_b82k"``...; downloaded by open_clip into the
models folder) or a local weights file (``.safetensors``, ``.pt``, ``.bin``), which we load ourselves without
executing pickled code. ``model`` may be an open_clip model name or the path of a model-config JSON (open_clip's
format), which is how the bundled tiny demo CLIP is described.

Two implementations answer alike (:func:`clip_backend` chooses; ``$CLIPCAP_CLIP_BACKEND`` = ``auto`` (default),
``open_clip`` or ``transformers`` forces one): this module's open_clip backbone, and transformers' ``CLIPModel`` with
open_clip's tokens and preprocessing (:mod:`lib_clipcap.clip_transformers`) where open_clip is missing or older than
:data:`MIN_OPEN_CLIP` (Forge Classic pins open-clip-torch 1.3.0). The transformers one loads local weights files only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .clip_base import BackboneBase
from .errors import ClipCapError, IncompatibleCheckpointError, MissingFileError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

#: The oldest open_clip this module's backbone runs on (A1111's pin: ``get_tokenizer``, ``list_models``,
#: ``add_model_config``, Hub weights); older ones (Forge Classic's 1.3.0) get the transformers backbone.
MIN_OPEN_CLIP = "2.20"
#: Environment variable that forces a backbone implementation: ``auto`` | ``open_clip`` | ``transformers``.
BACKEND_ENV = "CLIPCAP_CLIP_BACKEND"
BACKENDS = ("auto", "open_clip", "transformers")


def _release(version: str) -> tuple[int, ...]:
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def open_clip_version() -> str | None:
    """The installed open_clip's version (from its metadata, nothing imported), or None when there is none."""
    try:
        if importlib.util.find_spec("open_clip") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        return "0"  # importable but without metadata (a source tree on sys.path): its version is unknown


@functools.lru_cache(maxsize=4)
def _open_clip_import_error(version: str) -> str | None:
    """Why ``import open_clip`` fails (None: it imports); cached per installed version (imports are cached too)."""
    try:
        import open_clip  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install fails in any way; auto falls back instead
        return f"{type(e).__name__}: {e}"
    return None


def clip_backend(requested: str | None = None) -> tuple[str, str]:
    """Which CLIP implementation :meth:`ClipBackbone.load` uses, and why: ``("open_clip" | "transformers", reason)``.

    ``requested`` (default ``$CLIPCAP_CLIP_BACKEND``, default ``"auto"``): ``"open_clip"`` or ``"transformers"`` is
    obeyed; ``"auto"`` takes open_clip when it is installed, at least :data:`MIN_OPEN_CLIP` and importable, else
    transformers.

    Raises:
        ClipCapError: an unknown backend name.
    """
    choice = (requested or os.environ.get(BACKEND_ENV) or "auto").strip().lower().replace("-", "_")
    if choice not in BACKENDS:
        raise ClipCapError(f"unknown CLIP backend {choice!r} (from {BACKEND_ENV} or backend=); expected one of "
                           f"{', '.join(BACKENDS)}")
    if choice != "auto":
        return choice, f"{BACKEND_ENV}={choice}" if not requested else f"backend={choice!r}"
    version = open_clip_version()
    if version is None:
        return "transformers", "open_clip is not installed"
    if version != "0" and _release(version) < _release(MIN_OPEN_CLIP):
        return "transformers", f"open-clip-torch {version} is older than {MIN_OPEN_CLIP}"
    error = _open_clip_import_error(version)
    if error is not None:
        return "transformers", f"open_clip {version} does not import ({error[:200]})"
    return "open_clip", f"open-clip-torch {version}"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a tensor dict from safetensors, or from a torch file with ``weights_only=True`` (no code runs)."""
    from .checkpoint import read_state_dict

    return read_state_dict(path)


def _register_config(model: str) -> str:
    """Register a model-config JSON file with open_clip and return the model name it defines."""
    import open_clip

    path = Path(model).expanduser()
    name = path.stem
    if name not in open_clip.list_models():
        json.loads(path.read_text(encoding="utf-8"))  # fail early with a JSON error naming the file
        open_clip.add_model_config(path)
    return name


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning(enabled: bool):
    """open_clip warns that the model is randomly initialised; with a local file we load the weights right after."""
    if not enabled:
        yield
        return
    filt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def _tokenizer_for(tokenizer: Callable, model) -> Callable:
    """The tokenizer, padding to the model's own context length.

    Older open_clip (2.20, A1111's pin) returns a plain ``tokenize`` that always pads to 77 tokens, whatever the
    model config says, so a text tower with a shorter context (the bundled 32-token demo CLIP) fails on every text;
    newer ones read the length from the config. Binding it explicitly works with both.
    """
    import functools
    import inspect

    ctx = getattr(model, "context_length", None)
    pos = getattr(model, "positional_embedding", None)
    if ctx is None and pos is not None:
        ctx = int(pos.shape[0])
    try:
        takes_length = "context_length" in inspect.signature(tokenizer).parameters
    except (TypeError, ValueError):
        takes_length = False
    return functools.partial(tokenizer, context_length=int(ctx)) if ctx and takes_length else tokenizer


class ClipBackbone(BackboneBase):
    """An open_clip model in eval mode with its preprocessing; encodes images and texts to features.

    :meth:`load` returns a :class:`~lib_clipcap.clip_transformers.TransformersClipBackbone` (same interface, the
    same :class:`~lib_clipcap.clip_base.BackboneBase`) where :func:`clip_backend` says so.
    """

    backend = "open_clip"

    @classmethod
    def load(
        cls,
        model: str,
        pretrained: str | None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_dir: str | Path | None = None,
        backend: str | None = None,
    ) -> BackboneBase:
        """Create the backbone.

        Args:
            model: open_clip model name (``"ViT-L-14"``) or path to an open_clip model-config JSON.
            pretrained: open_clip pretrained tag, a local weights file, or None for random weights.
            device, dtype: where and in which precision to run.
            cache_dir: where open_clip stores downloaded weights.
            backend: ``"auto"``, ``"open_clip"`` or ``"transformers"`` (default ``$CLIPCAP_CLIP_BACKEND``, else auto:
                see :func:`clip_backend`). The transformers backbone takes local weights files only.

        Raises:
            MissingFileError: the weights file is missing, or the tag cannot be downloaded (offline, or the
                transformers backbone).
            ClipCapError: the model name is unknown to open_clip (or to the transformers backbone, or needs open_clip).
        """
        kind, why = clip_backend(backend)
        if kind == "transformers":
            from .clip_transformers import TransformersClipBackbone

            log.info("CLIP %s through transformers (%s)", model, why)
            return TransformersClipBackbone.load(model, pretrained, device=device, dtype=dtype, cache_dir=cache_dir,
                                                 why=why)
        try:
            import open_clip
        except ImportError as e:  # only when forced: auto never picks an open_clip that does not import
            raise ClipCapError(f"the open_clip CLIP backbone was asked for ({why}) but open_clip does not import: "
                               f"{e}; install open-clip-torch>=2.20 or use {BACKEND_ENV}=auto") from e

        name = _register_config(model) if str(model).endswith(".json") else model
        if name not in open_clip.list_models():
            raise ClipCapError(
                f"unknown CLIP model {model!r}; open_clip knows e.g. ViT-B-32, ViT-L-14 "
                f"(see open_clip.list_models()), or pass the path of a model-config JSON"
            )
        local = None
        if pretrained and (Path(pretrained).expanduser().suffix in WEIGHT_SUFFIXES or "/" in pretrained):
            local = Path(pretrained).expanduser()
            if not local.is_file():
                raise MissingFileError(f"CLIP weights file not found: {local}")
        try:
            with _quiet_random_init_warning(enabled=local is not None):
                clip, _, preprocess = open_clip.create_model_and_transforms(
                    name,
                    pretrained=None if local else pretrained,
                    device="cpu",
                    cache_dir=str(cache_dir) if cache_dir else None,
                )
        except RuntimeError as e:  # open_clip raises RuntimeError for unknown tags and failed downloads
            raise MissingFileError(
                f"could not get CLIP weights {name}/{pretrained}: {e}. Offline? Download them once with network "
                f"access, or pass a local weights file as clip_pretrained"
            ) from e
        except OSError as e:
            raise MissingFileError(
                f"could not download CLIP weights {name}/{pretrained} (offline?): {e}. Pass a local weights file "
                f"as clip_pretrained, or run once with network access"
            ) from e
        if local is not None:
            sd = read_weights(local)
            try:
                clip.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise IncompatibleCheckpointError(
                    f"CLIP weights {local} do not fit open_clip model {name}: {str(e)[:300]}"
                ) from e
        clip = clip.to(device=device, dtype=dtype)
        return cls(clip, preprocess, _tokenizer_for(open_clip.get_tokenizer(name), clip), name=name,
                   pretrained=str(pretrained))

    @property
    def embed_dim(self) -> int:
        """Size of the image/text features (512 for ViT-B/32, 768 for ViT-L/14)."""
        proj = getattr(self.model.visual, "proj", None)
        if proj is not None:
            return int(proj.shape[1])
        return int(self.model.text_projection.shape[1])
