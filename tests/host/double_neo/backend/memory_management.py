"""Forge Neo's backend/memory_management.py (rewritten from ComfyUI's model_management), reduced to what extensions
call, with the double's VRAM bookkeeping (modules/_vram.py): ``load_models_gpu(models, memory_required=0,
force_patch_weights=False, minimum_memory_required=None, force_full_load=False)`` frees room by unloading the least
recently used models the call does not need, then loads; ``current_loaded_models`` holds ``LoadedModel`` entries that
reach their patcher through a weak reference (a patcher nobody keeps is "dead" and dropped); ``free_memory``,
``unload_all_models``, ``soft_empty_cache``, ``text_encoder_device`` / ``text_encoder_offload_device``,
``should_use_fp16``, ``get_free_memory``, ``module_size``.
"""

import torch

from modules._vram import VRAM, LoadedModel, module_size  # noqa: F401

_vram = VRAM(weak=True)
calls = _vram.calls
current_loaded_models = _vram.current_loaded_models
cpu = torch.device("cpu")


def __getattr__(name):  # soft_empty_cache_calls, budget: live values of the bookkeeping
    if name in ("soft_empty_cache_calls", "budget"):
        return getattr(_vram, name)
    raise AttributeError(name)


def set_budget(nbytes: int) -> None:
    """Test helper: the accelerator's size."""
    _vram.budget = nbytes


def loaded_models(only_currently_used=False):
    return _vram.loaded()


def get_torch_device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def text_encoder_device():
    return get_torch_device()


def text_encoder_offload_device():
    return cpu


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return device is not None and torch.device(device).type == "cuda"


def get_free_memory(dev=None, torch_free_too=False):
    free = _vram.free(dev or get_torch_device())
    return (free, free) if torch_free_too else free


def free_memory(memory_required, device, keep_loaded=[]):
    return _vram.free_memory(memory_required, device, keep_loaded)


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    _vram.load_models_gpu(models, memory_required)


def load_model_gpu(model):
    return load_models_gpu([model])


def cleanup_models_gc():
    _vram.cleanup_dead()


def unload_all_models():
    _vram.unload_all_models()


def soft_empty_cache(force=False):
    _vram.soft_empty_cache(force)
