"""CUDA-only checks: fp16 inference, AMP training, and GPU memory really given back. Skipped without a CUDA GPU;
``tools/gpu_check.sh`` runs them (``-m cuda``) on a GPU machine and fails if any is skipped there."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(str(p) for p in (ROOT / "lib_clipcap" / "assets" / "samples").iterdir())


def test_fp16_inference_gives_the_fp32_captions():
    from lib_clipcap.captioner import Captioner

    gpu = Captioner.from_pretrained("shapes-demo", device="cuda")  # default dtype on a GPU: fp16
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).dtype == torch.float16
    cpu = Captioner.from_pretrained("shapes-demo", device="cpu")
    kw = dict(decoding="greedy", max_new_tokens=24)
    half = [r.text for r in gpu.caption(SAMPLES, **kw)]
    full = [r.text for r in cpu.caption(SAMPLES, **kw)]
    assert all(half)
    same = sum(a == b for a, b in zip(half, full))
    assert same >= len(SAMPLES) - 1, list(zip(half, full))  # fp16 may flip one near-tie, not more
    beams = gpu.caption(SAMPLES[:2], decoding="beam", beam_size=5, num_candidates=3)
    assert all(r.ok and len(r.candidates) == 3 for r in beams)


def test_unload_gives_the_gpu_memory_back():
    from lib_clipcap.captioner import Captioner

    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    cap = Captioner.from_pretrained("shapes-demo", device="cuda")
    assert cap.caption(SAMPLES[:1], decoding="greedy")[0].ok
    loaded = torch.cuda.memory_allocated()
    assert loaded - before > 2**20, (before, loaded)  # the weights were on the GPU (the demo model: ~10 MiB)
    cap.unload()
    del cap
    gc.collect()
    torch.cuda.empty_cache()
    after = torch.cuda.memory_allocated()
    print(f"GPU memory allocated: before {before / 2**20:.1f} MiB, loaded {loaded / 2**20:.1f} MiB, "
          f"after unload {after / 2**20:.1f} MiB")
    assert after <= before + 2**20, (before, loaded, after)


def test_amp_training_on_cuda_learns(tmp_path_factory, tiny_clip):
    from _train_world import make_world, tiny_clipcap_config

    from lib_clipcap.captioner import Captioner
    from lib_clipcap.train.clipcap import train_clipcap

    feats, fs = make_world(tmp_path_factory.mktemp("shapes"), tiny_clip)
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_clipcap_config(feats, out, device="cuda", amp=True, max_steps=60)
    result = train_clipcap(cfg, features=fs)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] / 2, log
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=str(ROOT / "lib_clipcap/assets/clip_configs/"
                                                                      "shapes-tiny.json"),
                                    clip_pretrained=str(ROOT / "lib_clipcap/assets/shapes/clip.safetensors"),
                                    device="cpu")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in cap.model.parameters())
