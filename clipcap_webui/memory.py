"""GPU etiquette: the :class:`~lib_clipcap.app.service.DevicePolicy` for each host (docs/hosts.md, GPU etiquette).

Captions must run beside diffusion without breaking it:

- **A1111** (:class:`A1111Policy`): models rest on the CPU. A call holds the host's ``queue_lock`` (so it never
  overlaps a generation), evicts the module that ``--lowvram``/``--medvram`` parked on the GPU, moves the captioner to
  ``devices.device_interrogate`` in fp16 (fp32 with ``--no-half`` or on the CPU; ``--use-cpu interrogate|all`` keeps
  it on the CPU), and afterwards moves it back to the CPU unless "Keep models in VRAM" is set, then runs the host's
  ``devices.torch_gc()``. This is the recipe of the host's own interrogator.
- **Forge** (:class:`ForgePolicy`): memory belongs to ``backend.memory_management``. The captioner's modules are
  wrapped once in a ``ModelPatcher`` (kept referenced, or Forge drops it as abandoned) and each call asks
  ``load_models_gpu([patcher])`` to make room and load it, then ``soft_empty_cache()``. Forge evicts it again when a
  generation needs the memory, so "Keep models in VRAM" has no effect there (as for Forge's own interrogator).
- **Forge Neo**: the same calls on its rewritten (ComfyUI-style) ``backend.memory_management``, whose entries hold the
  patcher weakly: the policy keeps it, so Neo can evict the captioner (``free_memory``) and load it again.
- **Forge Classic** (:class:`ClassicPolicy`): the same on the old Forge backend, ``ldm_patched.modules``.

Lock order: the host's ``queue_lock`` is always taken *before* the model manager's lock (:func:`host_queue`, or
:meth:`guard` around a manager call). Code that already runs inside a generation (which holds ``queue_lock``, e.g.
captioning each generated image) must say so with :func:`inside_generation`, or it would wait for itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from . import host

log = logging.getLogger(__name__)

_local = threading.local()


def _depth() -> int:
    return getattr(_local, "depth", 0)


@contextlib.contextmanager
def _mark_held() -> Iterator[None]:
    _local.depth = _depth() + 1
    try:
        yield
    finally:
        _local.depth -= 1


@contextlib.contextmanager
def host_queue() -> Iterator[None]:
    """Hold the host's ``call_queue.queue_lock`` (serialise with txt2img/img2img) unless this thread already does.

    The host's lock is a non-reentrant FIFO lock; nesting through this function is safe.
    """
    if _depth():
        with _mark_held():
            yield
        return
    from modules import call_queue

    with call_queue.queue_lock, _mark_held():
        yield


def inside_generation() -> contextlib.AbstractContextManager:
    """Declare that this thread already holds ``queue_lock`` (script hooks running inside a generation)."""
    return _mark_held()


def torch_module(model: Any) -> Any:
    """The ``torch.nn.Module`` holding all of ``model``'s weights (for Forge's ``ModelPatcher``).

    A captioner is a plain object with module attributes (``.model``) or backbones that hold one (``.clip.model``);
    they are gathered into one ``ModuleDict`` whose parameters are the captioner's own (no copy).
    """
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    mods = {}
    for name, value in vars(model).items():
        if isinstance(value, torch.nn.Module):
            mods[name] = value
        elif isinstance(getattr(value, "model", None), torch.nn.Module):
            mods[name] = value.model
    if not mods:
        raise TypeError(f"{type(model).__name__} holds no torch modules to hand to Forge's memory manager")
    return torch.nn.ModuleDict(mods)


def _keep_in_vram() -> bool:
    return bool(host.opt("clipcap_keep_in_vram", False))


class A1111Policy:
    """The A1111 recipe (see the module docstring).

    Args:
        keep_in_vram: returns True to leave the model on the GPU after a call (default: the WebUI setting).
    """

    def __init__(self, *, keep_in_vram: Callable[[], bool] | None = None) -> None:
        self.keep_in_vram = keep_in_vram or _keep_in_vram

    def load_device(self) -> Any:
        return "cpu"  # weights only visit the GPU during a call

    def load_dtype(self) -> Any:
        return None  # the library's CPU default (fp32); the call casts for the GPU

    def run_device(self) -> tuple[Any, Any]:
        """``(device, dtype)`` a call runs on: the interrogate device, fp16 unless ``--no-half`` or the CPU."""
        import torch
        from modules import devices

        use_cpu = {str(x).lower() for x in (host.cmd_opt("use_cpu") or [])}
        dev = devices.cpu if use_cpu & {"interrogate", "all"} else getattr(devices, "device_interrogate", None)
        dev = torch.device(dev or devices.cpu)
        half = dev.type != "cpu" and not host.cmd_opt("no_half", False)
        return dev, (torch.float16 if half else torch.float32)

    def guard(self) -> contextlib.AbstractContextManager:
        """Enter before the model manager's lock (lock order: ``queue_lock`` first)."""
        return host_queue()

    @contextlib.contextmanager
    def session(self, model: Any) -> Iterator[None]:
        import torch
        from modules import devices, lowvram

        with host_queue():
            if any(host.cmd_opt(flag, False) for flag in ("lowvram", "medvram", "medvram_sdxl")):
                lowvram.send_everything_to_cpu()  # the SD part parked on the GPU goes back to RAM
                devices.torch_gc()
            dev, dtype = self.run_device()
            try:
                model.to(dev, dtype)  # inside: a failed move (out of memory) still goes back to the CPU
                with torch.no_grad():
                    yield
            finally:
                if dev.type != "cpu" and not self.keep_in_vram():
                    model.to(devices.cpu)
                devices.torch_gc()


class ForgePolicy:
    """Forge's memory manager does the moving (see the module docstring).

    Args:
        memory_management: ``backend.memory_management``.
        model_patcher: ``backend.patcher.base.ModelPatcher``.
    """

    def __init__(self, memory_management: Any, model_patcher: Any) -> None:
        self.mm = memory_management
        self.model_patcher = model_patcher
        # captioner -> (id of its grammar head when the patcher was made, the patcher)
        self._patchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def load_device(self) -> Any:
        return self.mm.text_encoder_offload_device()

    def load_dtype(self) -> Any:
        return None

    def guard(self) -> contextlib.AbstractContextManager:
        return host_queue()

    def gpu_device(self) -> Any:
        """Where the manager loads the captioner for a caption: Forge's text-encoder device."""
        return self.mm.text_encoder_device()

    def patcher(self, model: Any) -> Any:
        """The ``ModelPatcher`` of ``model`` (cast to the dtype Forge picks for its load device). Made once per set
        of weights: when a grammar head is attached later (loaded on first use), a new patcher covers it too and
        Forge drops the old, abandoned one."""
        import torch

        grammar = id(getattr(model, "grammar", None))
        with self._lock:
            made_for, p = self._patchers.get(model, (None, None))
            if p is None or made_for != grammar:
                load, offload = self.gpu_device(), self.mm.text_encoder_offload_device()
                fp16 = torch.device(load).type != "cpu" and bool(self.mm.should_use_fp16(device=load))
                model.to(None, torch.float16 if fp16 else torch.float32)
                p = self.model_patcher(torch_module(model), load_device=load, offload_device=offload)
                self._patchers[model] = (grammar, p)
            return p

    @contextlib.contextmanager
    def session(self, model: Any) -> Iterator[None]:
        import torch

        with host_queue():
            try:
                self.mm.load_models_gpu([self.patcher(model)])
                with torch.no_grad():
                    yield
            finally:
                self.mm.soft_empty_cache()


class ClassicPolicy(ForgePolicy):
    """Forge Classic: the same registration with its old-Forge-backend memory manager
    (``ldm_patched.modules.model_management`` + ``ldm_patched.modules.model_patcher.ModelPatcher``).

    Classic's ``text_encoder_device()`` is the CPU unless ``--always-gpu`` / ``--clip-in-gpu``; the captioner is no
    text encoder of the diffusion model, so it loads on ``get_torch_device()`` and lets ``load_models_gpu`` make room
    (and evict it again for the next generation)."""

    def gpu_device(self) -> Any:
        return self.mm.get_torch_device()


def make_policy() -> Any:
    """The policy for the running host (:func:`clipcap_webui.host.host_info`): the Forge-family memory manager when
    present (Forge and Neo: ``backend``; Classic: ``ldm_patched``), else the A1111 recipe."""
    mm, patcher = host.forge_memory(), host.forge_model_patcher()
    if mm is not None and patcher is not None:
        return ClassicPolicy(mm, patcher) if host.host_info().memory == "ldm_patched" else ForgePolicy(mm, patcher)
    return A1111Policy()


def run_model(manager: Any, method: str, images: Any, **kwargs: Any) -> list:
    """``manager.<method>(images, ...)`` (``caption``, ``prompt``, ``caption_and_tag``) with the host's lock taken
    first (the lock order above)."""
    guard = getattr(manager.policy, "guard", None)
    with (guard() if guard else contextlib.nullcontext()):
        return getattr(manager, method)(images, **kwargs)


def run_caption(manager: Any, images: Any, **kwargs: Any) -> list:
    """``manager.caption(...)`` under :func:`run_model`'s lock order."""
    return run_model(manager, "caption", images, **kwargs)


def run_prompt(manager: Any, images: Any, **kwargs: Any) -> list:
    """``manager.prompt(...)`` (caption plus prompt) under :func:`run_model`'s lock order."""
    return run_model(manager, "prompt", images, **kwargs)
