"""Where models run and in which precision: the default device and dtype, and ``dtype="int8"`` (CPU only).

Every loader (captioner, SBG, scorers, trainers, evaluators) resolves ``device``/``dtype`` arguments here, so the
rules are written once.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ClipCapError

__all__ = ["default_device", "default_dtype", "device_and_dtype", "is_int8"]


def default_device() -> torch.device:
    """CUDA when available, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on accelerators (half the memory, tensor cores), fp32 on the CPU (fp16 matmuls are slow there)."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def is_int8(dtype: Any) -> bool:
    """Whether ``dtype`` asks for int8 GPT-2 weights (``"int8"``; see :mod:`lib_clipcap.quant`)."""
    return isinstance(dtype, str) and dtype.lower() == "int8"


def device_and_dtype(device: Any, dtype: Any) -> tuple[torch.device, torch.dtype]:
    """The device and the torch dtype to load weights in (``None``: :func:`default_device` / :func:`default_dtype`).

    ``dtype`` may be a torch dtype or a name (fp32, fp16, bf16); ``"int8"`` loads fp32 on the CPU, and the loader
    quantizes GPT-2's weights afterwards (:mod:`lib_clipcap.quant`).

    Raises:
        ClipCapError: int8 on another device than the CPU, or an unknown dtype name.
    """
    if is_int8(dtype):
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type != "cpu":
            raise ClipCapError(f"int8 weights run on the CPU only; on {dev} use fp16 (or bf16)")
        return dev, torch.float32
    dev = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        try:
            dtype = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                     "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise ClipCapError(f"unknown dtype {dtype!r}; use fp32, fp16, bf16 or int8 (CPU)") from None
    return dev, dtype or default_dtype(dev)
