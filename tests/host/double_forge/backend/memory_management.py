"""Forge's backend/memory_management.py, reduced to what extensions call; every call is recorded in ``calls``.

``load_models_gpu`` moves each patcher's model to its load device (the CPU on a machine without a GPU) and keeps it
in ``current_loaded_models``; like Forge, an entry nobody else references any more is dropped as abandoned.
"""

import sys

import torch

calls = []
current_loaded_models = []
soft_empty_cache_calls = 0


def get_torch_device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def text_encoder_device():
    return get_torch_device()


def text_encoder_offload_device():
    return torch.device("cpu")


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return device is not None and torch.device(device).type == "cuda"


def module_size(module):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def get_free_memory(dev=None, torch_free_too=False):
    return 8 << 30


def _drop_abandoned():
    for m in list(current_loaded_models):
        if sys.getrefcount(m) <= 3:  # only this list (and getrefcount's argument) hold it
            current_loaded_models.remove(m)


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    calls.append(("load_models_gpu", list(models)))
    _drop_abandoned()
    for patcher in models:
        patcher.model.to(patcher.load_device)
        patcher.current_device = patcher.load_device
        if patcher not in current_loaded_models:
            current_loaded_models.insert(0, patcher)


def unload_all_models():
    calls.append(("unload_all_models",))
    for patcher in current_loaded_models:
        patcher.model.to(patcher.offload_device)
    current_loaded_models.clear()


def soft_empty_cache(force=False):
    global soft_empty_cache_calls
    soft_empty_cache_calls += 1
    calls.append(("soft_empty_cache",))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
