"""int8 weights for GPT-2 on the CPU: faster one-image captions where memory bandwidth is the limit.

Decoding one caption at a time reads every GPT-2 weight once per token (GPT-2 small: ~0.5 GB in fp32) while doing
little arithmetic with it, so on a CPU its speed is set by how fast memory streams the weights. Stored as int8 (one
scale per output row, symmetric), the same matrices are a quarter of the bytes.

How: PyTorch's quantized engine (fbgemm on x86, qnnpack on ARM) packs each ``nn.Linear`` once
(``torch.ops.quantized.linear_prepack``) and multiplies with ``torch.ops.quantized.linear_dynamic``, which quantizes
the activations on the fly and returns fp32. These operators exist in every PyTorch the WebUI hosts ship (A1111:
2.1.2, Forge: 2.3.1) and in current releases; this module calls them directly instead of going through
``torch.ao.quantization.quantize_dynamic``, the eager workflow PyTorch has deprecated. Current PyTorch also marks
quantized tensors themselves as deprecated (to be removed in a future release): where they are gone, or where no
quantized engine is built in (some ARM or exotic builds), :func:`int8_available` is ``False`` and asking for int8
raises a clear error; fp32 and bf16 keep working.

Only GPT-2's projections and its output layer are quantized: the prefix mapper and CLIP run once per image and stay
in full precision. Captions agree with fp32 closely but not always token for token (see the README's figures).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .errors import ClipCapError

__all__ = ["Int8Linear", "int8_available", "quantize_gpt2_"]


def _engine() -> str | None:
    engines = list(getattr(torch.backends.quantized, "supported_engines", []))
    for name in ("fbgemm", "x86", "qnnpack"):
        if name in engines:
            return name
    return None


def int8_available() -> bool:
    """Whether this PyTorch build can run int8 linear layers on the CPU."""
    ops = ("linear_dynamic", "linear_prepack")
    return (_engine() is not None and hasattr(torch, "quantize_per_channel")
            and all(hasattr(torch.ops.quantized, op) for op in ops))


class Int8Linear(nn.Module):
    """An ``nn.Linear`` with int8 weights (per-output-channel scales), fp32 in and out; CPU only, inference only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not int8_available():
            raise ClipCapError("int8 weights need PyTorch's quantized CPU engine (fbgemm or qnnpack), which this "
                               "PyTorch build lacks; use dtype fp32 (or bf16) instead")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        engine = _engine()
        if torch.backends.quantized.engine != engine:
            torch.backends.quantized.engine = engine
        w = linear.weight.detach().float().cpu()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # symmetric, one scale per output row
        with warnings.catch_warnings():  # current PyTorch warns that quantized tensors are deprecated: see above
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0,
                                                 torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._packed)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_gpt2_(gpt: nn.Module) -> nn.Module:
    """Replace, in place, every linear layer of a :class:`~lib_clipcap.gpt2.GPT2LMHead` (the blocks' projections and
    ``lm_head``) by an :class:`Int8Linear`; the token embedding stays fp32 (``lm_head`` is tied to it in fp32, so
    both keep working). The model must be on the CPU in fp32.

    Returns:
        ``gpt`` itself, now inference-only.

    Raises:
        ClipCapError: no quantized engine in this PyTorch, or the model is not on the CPU in fp32.
    """
    p = gpt.transformer.wte.weight
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ClipCapError(f"int8 weights are for the CPU in fp32; this GPT-2 is on {p.device} in {p.dtype}")
    targets = [(name, m) for name, m in gpt.named_modules() if isinstance(m, nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = gpt.get_submodule(parent_name) if parent_name else gpt
        setattr(parent, child, Int8Linear(module))
    gpt.eval()
    gpt.requires_grad_(False)
    return gpt
