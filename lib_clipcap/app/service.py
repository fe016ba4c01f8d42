"""One holder for loaded models, shared by the CLI server, the gradio UI, the HTTP API and the WebUI glue.

Models load lazily on first use and stay cached (a WebUI "Reload UI" re-imports script files, but this module stays in
``sys.modules``, so nothing reloads). Every model call goes through one lock, so concurrent requests are served one at
a time instead of fighting over GPU memory, and through a :class:`DevicePolicy`, which is where a host decides where
the model runs (the WebUI adapter moves it to the GPU, evicting diffusion parts first, and back afterwards).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class DevicePolicy(Protocol):
    """Where models load and run. Hosts implement this; :class:`LocalDevicePolicy` is the standalone default."""

    def load_device(self) -> Any:
        """Device to load weights on (e.g. "cpu" when they only visit the GPU during a call)."""

    def load_dtype(self) -> Any:
        """dtype to load weights in (None: the library's default for the device)."""

    def session(self, model: Any) -> contextlib.AbstractContextManager:
        """Context around one model call: move ``model`` where it must run, and back afterwards if needed."""


class LocalDevicePolicy:
    """Load on the best device (or the one given) and leave the model there."""

    def __init__(self, device: Any = None, dtype: Any = None) -> None:
        self.device = device
        self.dtype = dtype

    def load_device(self) -> Any:
        return self.device

    def load_dtype(self) -> Any:
        return self.dtype

    @contextlib.contextmanager
    def session(self, model: Any) -> Iterator[None]:
        yield


class ModelManager:
    """Loads, caches and runs captioning models by registry name.

    Args:
        models_dir: where model files live / are downloaded (the WebUI passes ``<models_path>/clipcap``).
        policy: device handling; default :class:`LocalDevicePolicy`.
        max_loaded: models kept in memory at once; the least recently used is unloaded beyond that.
        loader: ``name -> model`` override (tests, custom checkpoints).
    """

    def __init__(self, *, models_dir: str | Path | None = None, policy: DevicePolicy | None = None,
                 max_loaded: int = 1, loader: Callable[[str], Any] | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.policy = policy or LocalDevicePolicy()
        self.max_loaded = max(1, max_loaded)
        self._loader = loader
        self._models: dict[str, Any] = {}
        self._lock = threading.RLock()  # one model call / load at a time
        self._taggers: dict[tuple[str, tuple[str, ...]], Any] = {}  # (model, vocabularies) -> Tagger

    @property
    def lock(self) -> threading.RLock:
        """Held during every load and model call; batch jobs hold it per batch, not for a whole run."""
        return self._lock

    def _load(self, name: str) -> Any:
        if self._loader is not None:
            return self._loader(name)
        from ..registry import get_model

        entry = get_model(name)
        kw = dict(models_dir=self.models_dir, device=self.policy.load_device(), dtype=self.policy.load_dtype())
        if entry.kind == "sbg":
            from ..sbg import BlindGuesser

            return BlindGuesser.from_pretrained(entry.name, **kw)
        from ..captioner import Captioner

        return Captioner.from_pretrained(entry.name, **kw)

    def get(self, name: str) -> Any:
        """The loaded model ``name``, loading it (and evicting the least recently used) if needed.

        Raises:
            UnknownModelError, MissingFileError, CheckpointError: as the loaders do.
        """
        key = self._key(name)
        with self._lock:
            model = self._models.pop(key, None)
            if model is None:
                # Fetch the files before evicting anything: a missing or undownloadable model must not cost the
                # user the model that is loaded now.
                self._ensure_files(key)
                while len(self._models) >= self.max_loaded:
                    old, victim = next(iter(self._models.items()))
                    log.info("unloading %s to make room for %s", old, key)
                    self._models.pop(old)
                    victim.unload()
                    self._drop_taggers(old)
                log.info("loading model %s", key)
                model = self._load(key)
            self._models[key] = model  # most recently used last
            return model

    def _key(self, name: str) -> str:
        """The registry's spelling of ``name`` (the key of the loaded models)."""
        from ..registry import get_model

        return get_model(name).name if self._loader is None else name

    def _guard(self) -> contextlib.AbstractContextManager:
        """The host's outer lock, taken BEFORE ours (a policy may offer ``guard()``, e.g. the WebUI's queue lock).

        Code running inside a generation already holds the host lock and then wants ours; taking them in the same
        order everywhere rules out a deadlock between such a caption and an API or batch call.
        """
        guard = getattr(self.policy, "guard", None)
        return guard() if guard is not None else contextlib.nullcontext()

    def loaded(self) -> list[str]:
        """Names of the models in memory. Does not wait for a running model call (list() of a dict is atomic)."""
        return list(self._models)

    def _ensure_files(self, name: str) -> None:
        if self._loader is not None:
            return
        from .. import hub
        from ..registry import get_model

        hub.resolve_model_files(get_model(name), models_dir=self.models_dir)

    def unload(self, name: str | None = None) -> list[str]:
        """Unload ``name`` (or every model); returns the names unloaded."""
        with self._lock:
            names = [n for n in self._models if name is None or n.lower() == name.lower()]
            for n in names:
                self._models.pop(n).unload()
            for n in names:
                self._drop_taggers(n)
            return names

    def caption(self, images: Sequence[Any] | Any, *, model: str, **options: Any) -> list:
        """Caption with ``model`` under the device policy; options as for :meth:`Captioner.caption`."""
        with self._guard(), self._lock:
            m = self.get(model)
            with self.policy.session(m):
                return m.caption(images, **options)

    def prompt(self, images: Sequence[Any] | Any, *, model: str, style: str,
               prompt: dict[str, Any] | None = None, **options: Any) -> list:
        """Caption with ``model`` and make prompts (:func:`lib_clipcap.tags.prompt.prompt_images`) under the device
        policy, with one image encoding each.

        Args:
            style: ``"fast"`` or ``"best"``.
            prompt: the prompt settings (``{"max_tokens": 75}``).
            options: the caption options, as for :meth:`caption` (the decoding settings and ``rerank``).

        Returns:
            ``(CaptionResult, PromptResult or None)`` per input.
        """
        from ..tags.cache import default_cache_dir
        from ..tags.prompt import prompt_images

        rerank = options.pop("rerank", None)
        with self._guard(), self._lock:
            m = self.get(model)
            with self.policy.session(m):
                return prompt_images(m, images, style, rerank=rerank, decoding=options,
                                     cache=default_cache_dir(self.models_dir), **(prompt or {}))

    def caption_and_tag(self, images: Sequence[Any] | Any, *, model: str, content: str = "caption+tags",
                        vocabulary: Sequence[str] = (), selection: Any = None, **options: Any) -> list:
        """Caption (unless ``content="tags"``) and tag ``images`` with ``model`` under the device policy.

        A :class:`~lib_clipcap.captioner.Captioner` uses one CLIP image encoding for both
        (:func:`lib_clipcap.tags.tagger.caption_and_tag`); another model (SBG) captions on its own and the tags cost
        a second encoding. The tagger (the vocabulary's text features, cached on disk in the models folder) is kept
        per (model, vocabularies) while the model stays loaded.

        Args:
            content: ``"tags"`` or ``"caption+tags"``.
            vocabulary: bundled vocabulary names or files (empty: ``general``).
            selection: a :class:`~lib_clipcap.tags.selection.TagSelection` (None: the defaults).
            options: the caption options, as for :meth:`caption`.

        Returns:
            ``(CaptionResult, tags)`` per input; with ``content="tags"`` the results have empty text.
        """
        from ..captioner import Captioner
        from ..results import CaptionResult
        from ..tags.tagger import caption_and_tag, tag_images

        with self._guard(), self._lock:
            m = self.get(model)
            with self.policy.session(m):
                tagger = self._tagger(self._key(model), m, tuple(vocabulary))
                if content == "tags":
                    tags = tag_images(m, images, tagger, selection)
                    return [(CaptionResult(text="", score=None), t) for t in tags]
                if isinstance(m, Captioner):
                    return caption_and_tag(m, tagger, images, selection, **options)
                results = m.caption(images, **options)
                ok = [i for i, r in enumerate(results) if not r.error]
                src = images if isinstance(images, (list, tuple)) else [images]
                tags = tag_images(m, [src[i] for i in ok], tagger, selection) if ok else []
                by_index = dict(zip(ok, tags))
                return [(r, by_index.get(i, [])) for i, r in enumerate(results)]

    def _tagger(self, name: str, model: Any, vocabulary: tuple[str, ...]) -> Any:
        """The cached :class:`~lib_clipcap.tags.Tagger` of ``model`` (rebuilt when the model was reloaded)."""
        from ..tags import Tagger
        from ..tags.cache import default_cache_dir
        from ..tags.tagger import clip_of
        from ..tags.vocabulary import GENERAL_NAME

        key = (name, vocabulary)
        tagger = self._taggers.get(key)
        if tagger is None or tagger.clip is not clip_of(model):
            specs = list(vocabulary) or [GENERAL_NAME]
            tagger = Tagger(model, specs if len(specs) > 1 else specs[0], cache=default_cache_dir(self.models_dir))
            self._drop_taggers(name)  # a reloaded model's: they hold its old CLIP
            self._taggers[key] = tagger
        return tagger

    def _drop_taggers(self, name: str) -> None:
        """Forget the taggers of model ``name``: each holds the model's CLIP, whose memory must go with the model."""
        self._taggers = {k: t for k, t in self._taggers.items() if k[0] != name}

    @contextlib.contextmanager
    def using(self, model: str) -> Iterator[Any]:
        """Hold the lock and the device session for a series of calls on one model (batch jobs)."""
        with self._guard(), self._lock:
            m = self.get(model)
            with self.policy.session(m):
                yield m


_default: ModelManager | None = None
_default_lock = threading.Lock()


def default_manager(**kwargs: Any) -> ModelManager:
    """The process-wide manager (created on first call with ``kwargs``; later calls return the same one)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelManager(**kwargs)
        return _default


def reset_default_manager() -> None:
    """Unload everything and forget the process-wide manager (the WebUI calls this on script unload)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.unload()
        _default = None
