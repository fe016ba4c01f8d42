"""GPT-2's nn.Linear layout (checkpoints keep Hugging Face's Conv1D layout) and int8 weights on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
from lib_clipcap.quant import Int8Linear, int8_available, quantize_gpt2_

needs_int8 = pytest.mark.skipif(not int8_available(), reason="this PyTorch has no quantized CPU engine")


def small_gpt(seed: int = 0) -> GPT2LMHead:
    torch.manual_seed(seed)
    return GPT2LMHead(GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)).eval()


def test_state_dicts_keep_the_conv1d_layout_and_round_trip():
    gpt = small_gpt()
    sd = gpt.state_dict()
    # Hugging Face's layout: [in, out] for the projections, so released checkpoints load without conversion
    assert tuple(sd["transformer.h.0.attn.c_attn.weight"].shape) == (64, 192)
    assert tuple(sd["transformer.h.0.mlp.c_proj.weight"].shape) == (256, 64)
    assert tuple(gpt.transformer.h[0].attn.c_attn.weight.shape) == (192, 64)  # nn.Linear in memory
    other = small_gpt(seed=1)
    other.load_state_dict(sd, strict=True)
    x = torch.randn(2, 5, 64)
    assert torch.equal(gpt(x), other(x))
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in sd.items())


#: Relative error of a 768 x 3072 layer on N(0, 1) inputs, per kernel (int8_kernel().weight_max), with headroom over
#: what was measured: full-range weights (VNNI x86, ARM, qnnpack) 0.0096; weights in [-64, 64] (x86 without VNNI,
#: e.g. AVX2-only AMD EPYC) 0.0118. Full range on such a CPU measured 0.103: the saturation the probe detects.
INT8_TOLERANCE = {127: 0.013, 64: 0.017}


@needs_int8
def test_int8_linear_is_close_to_fp32():
    from lib_clipcap.quant import int8_kernel

    kernel = int8_kernel()
    torch.manual_seed(0)
    lin = torch.nn.Linear(768, 3072)
    q = Int8Linear(lin)
    x = torch.randn(4, 7, 768)
    with torch.no_grad():
        ref, got = lin(x), q(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    rel = float((got - ref).norm() / ref.norm())
    assert rel < INT8_TOLERANCE[kernel.weight_max], (kernel.describe(), rel)


@needs_int8
def test_the_kernel_probe_catches_saturating_cpus():
    """Where the probe chose the narrower weight range, full-range weights really are wrong on this CPU (so the
    check is needed), and the chosen range really is accurate; where it chose full range, full range is accurate."""
    from lib_clipcap import quant

    kernel = quant.int8_kernel()
    torch.manual_seed(0)
    lin = torch.nn.Linear(768, 3072)
    x = torch.randn(28, 768)
    with torch.no_grad():
        ref = lin(x)

    def rel_error(weight_max: int) -> float:
        torch.backends.quantized.engine = kernel.engine
        packed = torch.ops.quantized.linear_prepack(quant._quantize_rows(lin.weight.detach(), weight_max),
                                                    lin.bias.detach())
        return float((torch.ops.quantized.linear_dynamic(x, packed) - ref).norm() / ref.norm())

    assert rel_error(kernel.weight_max) < INT8_TOLERANCE[kernel.weight_max]
    if kernel.weight_max < 127:
        assert rel_error(127) > 0.05, "full-range weights were accurate: the probe should have kept them"
        assert "16 bits" in kernel.describe()


def test_no_exact_engine_means_no_int8(monkeypatch):
    from lib_clipcap import quant
    from lib_clipcap.errors import ClipCapError

    monkeypatch.setattr(quant, "_probe", lambda engine, weight_max: False)
    quant.int8_kernel.cache_clear()
    try:
        assert quant.int8_kernel() is None and not quant.int8_available()
        with pytest.raises(ClipCapError, match="exact integer products on this CPU"):
            Int8Linear(torch.nn.Linear(4, 4))
    finally:
        monkeypatch.undo()
        quant.int8_kernel.cache_clear()


@needs_int8
def test_int8_gpt2_keeps_the_logits_and_greedy_tokens():
    """Real-size GPT-2 small (random weights: the arithmetic of the trained model)."""
    torch.manual_seed(0)
    gpt = GPT2LMHead(GPT2Config()).eval()
    q = quantize_gpt2_(copy.deepcopy(gpt))
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 12 * 4 + 1  # 4 per block + lm_head
    emb = torch.randn(3, 10, 768) * 0.1
    with torch.inference_mode():
        ref, got = gpt(emb, last_only=True), q(emb, last_only=True)
    corr = torch.corrcoef(torch.stack([ref.flatten(), got.flatten()]))[0, 1]
    assert corr > 0.995, float(corr)


def test_quantizing_refuses_what_it_cannot_serve():
    from lib_clipcap.errors import ClipCapError

    gpt = small_gpt().to(torch.bfloat16)
    if int8_available():
        with pytest.raises(ClipCapError, match="CPU in fp32"):
            quantize_gpt2_(gpt)
    else:
        with pytest.raises(ClipCapError, match="quantized CPU engine"):
            Int8Linear(torch.nn.Linear(4, 4))


@needs_int8
def test_int8_captioner_writes_the_same_greedy_captions_on_the_samples(demo_captioner):
    from lib_clipcap import Captioner
    from lib_clipcap.errors import ClipCapError
    from lib_clipcap.registry import package_path

    samples = sorted(package_path("bundled:assets/samples").glob("*.*"))
    assert len(samples) >= 6
    q = Captioner.from_pretrained("shapes-demo", device="cpu", dtype="int8")
    assert q.quantized and not demo_captioner.quantized
    kw = dict(decoding="greedy", max_new_tokens=30)
    ref = [r.text for r in demo_captioner.caption(samples, **kw)]
    got = [r.text for r in q.caption(samples, **kw)]
    assert got == ref
    beams = dict(decoding="beam", beam_size=3, num_candidates=2, max_new_tokens=30)
    assert [r.text for r in q.caption(samples, **beams)] == [r.text for r in demo_captioner.caption(samples, **beams)]
    with pytest.raises(ClipCapError, match="CPU"):
        q.to("cuda")
    with pytest.raises(ClipCapError, match="int8 weights run on the CPU only"):
        Captioner.from_pretrained("shapes-demo", device="cuda", dtype="int8")


@pytest.mark.slow
@needs_int8
def test_int8_from_the_command_line(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from lib_clipcap.registry import package_path

    sample = str(package_path("bundled:assets/samples/shapes_00.png"))
    out = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption", sample, "--model", "shapes-demo",
                          "--dtype", "int8", "--decoding", "greedy", "--json"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["error"] is None and result["text"].strip(), result
