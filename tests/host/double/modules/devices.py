"""modules/devices.py. ``torch_gc`` only counts (``torch_gc_calls``) besides emptying the CUDA cache.

A1111: ``device_interrogate`` is set by ``modules.shared`` from ``--use-cpu`` (CPU for ``interrogate``/``all``, else the
optimal device). Forge: a shim over ``backend.memory_management`` (``torch_gc`` = ``soft_empty_cache``); Neo the
same over its rewritten one; Classic over ``ldm_patched.modules.model_management``.
"""

import contextlib

import torch

from modules._mode import FORGE, memory_management

torch_gc_calls = 0
cpu = torch.device("cpu")
fp8 = False
dtype = torch.float16
dtype_vae = torch.float16
dtype_unet = torch.float16
dtype_inference = torch.float16
unet_needs_upcast = False


def has_xpu():
    return False


def has_mps():
    return False


def get_cuda_device_string():
    return "cuda"


def get_optimal_device_name():
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_optimal_device():
    if FORGE:
        return memory_management().get_torch_device()
    return torch.device(get_optimal_device_name())


def get_device_for(task):
    from modules import shared

    if task in shared.cmd_opts.use_cpu or "all" in shared.cmd_opts.use_cpu:
        return cpu
    return get_optimal_device()


def torch_gc():
    global torch_gc_calls
    torch_gc_calls += 1
    if FORGE:
        memory_management().soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def autocast(disable=False):
    if disable or FORGE or dtype == torch.float32 or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.autocast("cuda")


def without_autocast(disable=False):
    return contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x, where):
    pass


device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = None
