"""Forge Classic's ldm_patched/modules/model_management.py (the old Forge backend), reduced to what extensions call,
with the double's VRAM bookkeeping (modules/_vram.py): ``load_models_gpu(models, memory_required=0)`` frees room by
unloading the least recently used models the call does not need, then loads; ``current_loaded_models`` holds
``LoadedModel`` entries with a strong reference (an entry nobody else references is dropped as abandoned);
``free_memory``, ``unload_all_models``, ``soft_empty_cache``, ``get_torch_device``, ``text_encoder_device`` (the CPU
unless ``--always-gpu`` / ``--clip-in-gpu``, as in Classic), ``text_encoder_offload_device``, ``should_use_fp16``,
``get_free_memory``, ``module_size``.
"""

import torch

from modules._vram import VRAM, LoadedModel, module_size  # noqa: F401

_vram = VRAM(weak=False)
calls = _vram.calls
current_loaded_models = _vram.current_loaded_models


def __getattr__(name):
    if name in ("soft_empty_cache_calls", "budget"):
        return getattr(_vram, name)
    raise AttributeError(name)


def set_budget(nbytes: int) -> None:
    """Test helper: the accelerator's size."""
    _vram.budget = nbytes


def loaded_models():
    return _vram.loaded()


def get_torch_device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")  # Classic: the CPU unless --always-gpu / --clip-in-gpu


def text_encoder_offload_device():
    return torch.device("cpu")


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return device is not None and torch.device(device).type == "cuda"


def get_free_memory(dev=None, torch_free_too=False):
    free = _vram.free(dev or get_torch_device())
    return (free, free) if torch_free_too else free


def free_memory(memory_required, device, keep_loaded=[]):
    return _vram.free_memory(memory_required, device, keep_loaded)


def load_models_gpu(models, memory_required=0):
    _vram.load_models_gpu(models, memory_required)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    _vram.unload_all_models()


def soft_empty_cache(force=False):
    _vram.soft_empty_cache(force)
