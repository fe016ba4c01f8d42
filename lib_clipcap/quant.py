"""int8 weights for GPT-2 on the CPU: faster one-image captions where memory bandwidth is the limit.

Decoding one caption at a time reads every GPT-2 weight once per token (GPT-2 small: ~0.5 GB in fp32) while doing
little arithmetic with it, so on a CPU its speed is set by how fast memory streams the weights. Stored as int8 (one
scale per output row, symmetric), the same matrices are a quarter of the bytes.

How: PyTorch's quantized engine (fbgemm on x86, qnnpack on ARM) packs each ``nn.Linear`` once
(``torch.ops.quantized.linear_prepack``) and multiplies with ``torch.ops.quantized.linear_dynamic``, which quantizes
the activations on the fly (unsigned 8 bits, one scale per call) and returns fp32. These operators exist in every
PyTorch the WebUI hosts ship (A1111: 2.1.2, Forge: 2.3.1) and in current releases; this module calls them directly
instead of going through ``torch.ao.quantization.quantize_dynamic``, the eager workflow PyTorch has deprecated.
Current PyTorch also marks quantized tensors themselves as deprecated (to be removed in a future release): where
they are gone, or where no quantized engine is built in (some ARM or exotic builds), :func:`int8_available` is
``False`` and asking for int8 raises a clear error; fp32 and bf16 keep working.

**The kernel depends on the CPU, so it is checked on the CPU it runs on.** On x86 CPUs without VNNI (AVX2-only, and
AVX-512 without VNNI), fbgemm multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds two products
in a *16-bit* register with saturation: 255 x 127 x 2 = 64770 does not fit, and such a layer's output is off by
about 10 % (measured on an AVX2 AMD EPYC: relative error 0.103 on a 768 x 3072 layer). With VNNI (``vpdpbusd``) and
on ARM the products are summed in 32 bits and nothing saturates. :func:`int8_kernel` finds out which case holds by
running a probe whose exact answer is known (activations at the top of the range times weights at the top of the
range, the product pairs that saturate): where full-range weights come back wrong, the weights are stored in
[-64, 64] instead (255 x 64 x 2 = 32640 fits), which keeps the activations at full resolution: relative error
0.012 on the same layer, better than PyTorch's ``reduce_range`` (7-bit activations: 0.018). If neither passes, the
next engine is probed (qnnpack), and where none gives exact results int8 is refused with a message. The probe runs
once per process and takes a few milliseconds.

Only GPT-2's projections and its output layer are quantized: the prefix mapper and CLIP run once per image and stay
in full precision. Captions agree with fp32 closely but not always token for token (see the README's figures).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ClipCapError

__all__ = ["Int8Kernel", "Int8Linear", "int8_available", "int8_kernel", "quantize_gpt2_"]

log = logging.getLogger(__name__)

#: Engines in order of preference: fbgemm/x86 are the fast x86 kernels, qnnpack the portable one (ARM's).
_ENGINES = ("fbgemm", "x86", "qnnpack")
#: Largest weight magnitude, in steps of the row's scale, tried in order: full int8, then the range whose product
#: pairs fit 16 bits (2 x 255 x 64 = 32640 <= 32767).
_WEIGHT_RANGES = (127, 64)
_OPS = ("linear_dynamic", "linear_prepack")


@dataclass(frozen=True)
class Int8Kernel:
    """The int8 kernel this CPU gives exact integer products with.

    Attributes:
        engine: PyTorch's quantized engine (``"fbgemm"``, ``"x86"`` or ``"qnnpack"``).
        weight_max: Largest stored weight magnitude (127: full int8; 64: the range that cannot saturate a 16-bit
            accumulator, chosen on x86 CPUs without VNNI).
        cpu: What ``torch.backends.cpu.get_cpu_capability()`` reports (``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``...).
    """

    engine: str
    weight_max: int
    cpu: str

    def describe(self) -> str:
        """One line for logs and ``--dtype int8`` users, e.g. ``"fbgemm, weights in [-64, 64] (AVX2: ...)"``."""
        if self.weight_max == 127:
            return f"{self.engine}, full-range int8 weights ({self.cpu})"
        return (f"{self.engine}, weights in [-{self.weight_max}, {self.weight_max}] ({self.cpu}: this CPU's int8 "
                f"kernel adds products in 16 bits, so full-range weights would saturate)")


def _quantize_rows(w: torch.Tensor, weight_max: int) -> torch.Tensor:
    """``w`` [out, in] fp32 as a per-row symmetric qint8 tensor whose values lie in ``[-weight_max, weight_max]``."""
    scales = (w.abs().amax(dim=1) / float(weight_max)).clamp(min=1e-8)
    with warnings.catch_warnings():  # current PyTorch warns that quantized tensors are deprecated: see above
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_channel(w, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0,
                                          torch.qint8)


def _probe(engine: str, weight_max: int) -> bool:
    """Whether ``engine`` multiplies exactly with weights stored up to ``weight_max``: activations 1.0 (u8 255) and
    weights +-1 (int8 +-weight_max), alternating so that a saturating pair of products shows; the exact answer is
    the row sum. A few rows of 64 inputs; ~1 ms."""
    try:
        torch.backends.quantized.engine = engine
        k = 64
        w = torch.ones(4, k)
        w[1] = -1.0
        w[2, ::2] = -1.0  # pairs of opposite sign: exact 0 even with saturation, a control row
        w[3, : k // 2] = -1.0
        x = torch.ones(2, k)
        x[1, 0] = 0.0  # the dynamic range must include 0; both rows quantize 1.0 to 255
        packed = torch.ops.quantized.linear_prepack(_quantize_rows(w, weight_max), None)
        got = torch.ops.quantized.linear_dynamic(x, packed)
        want = x @ w.t()
        return bool(torch.allclose(got, want, rtol=0.0, atol=0.05 * k / weight_max + 1e-3))
    except (RuntimeError, AttributeError):
        return False


@functools.lru_cache(maxsize=None)
def int8_kernel() -> Int8Kernel | None:
    """The first engine and weight range that give exact integer products on this CPU (see the module docstring),
    or ``None`` when no engine does (or this PyTorch has no quantized CPU engine). Probed once per process; leaves
    ``torch.backends.quantized.engine`` set to the chosen engine."""
    if not hasattr(torch, "quantize_per_channel") or not all(hasattr(torch.ops.quantized, op) for op in _OPS):
        return None
    supported = list(getattr(torch.backends.quantized, "supported_engines", []))
    before = torch.backends.quantized.engine
    cpu = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")())
    for engine in (e for e in _ENGINES if e in supported):
        for weight_max in _WEIGHT_RANGES:
            if _probe(engine, weight_max):
                kernel = Int8Kernel(engine, weight_max, cpu)
                torch.backends.quantized.engine = engine
                log.info("int8 kernel: %s", kernel.describe())
                return kernel
    torch.backends.quantized.engine = before
    return None


def int8_available() -> bool:
    """Whether this PyTorch build, on this CPU, runs int8 linear layers accurately (:func:`int8_kernel`)."""
    return int8_kernel() is not None


class Int8Linear(nn.Module):
    """An ``nn.Linear`` with int8 weights (per-output-channel scales), fp32 in and out; CPU only, inference only.

    The weights use the range :func:`int8_kernel` found exact on this CPU.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        kernel = int8_kernel()
        if kernel is None:
            raise ClipCapError("int8 weights need PyTorch's quantized CPU engine (fbgemm or qnnpack) giving exact "
                               "integer products on this CPU, which this PyTorch build lacks; use dtype fp32 (or "
                               "bf16) instead")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = kernel
        if torch.backends.quantized.engine != kernel.engine:
            torch.backends.quantized.engine = kernel.engine
        w = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack(_quantize_rows(w, kernel.weight_max), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._packed)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 (+-{self.kernel.weight_max})"


def quantize_gpt2_(gpt: nn.Module) -> nn.Module:
    """Replace, in place, every linear layer of a :class:`~lib_clipcap.gpt2.GPT2LMHead` (the blocks' projections and
    ``lm_head``) by an :class:`Int8Linear`; the token embedding stays fp32 (``lm_head`` is tied to it in fp32, so
    both keep working). The model must be on the CPU in fp32.

    Returns:
        ``gpt`` itself, now inference-only.

    Raises:
        ClipCapError: no quantized engine in this PyTorch that is exact on this CPU, or the model is not on the CPU
            in fp32.
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
