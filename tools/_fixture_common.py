"""What the fixture builders in tools/ (build_fixtures.py, build_sbg_fixtures.py) share: the repository on
``sys.path``, where the tiny shapes-world CLIP lies and how it loads, and the training loop of the tiny models. (The
tokenizer.json rewrite for old tokenizers is the library's: ``lib_clipcap.train.data.write_legacy_tokenizer_json``.)

    import _fixture_common as common      # first: it puts the repository on sys.path for lib_clipcap
    common.train(model, steps, lr=3e-3, weight_decay=0.01, seed=1, name="clipcap", loss_at=loss_at, clip_grad=1.0)

Everything here is deterministic given the callers' seeds: the builders' outputs are committed and must not change.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASSETS = ROOT / "lib_clipcap" / "assets"
CLIP_CONFIG = ASSETS / "clip_configs" / "shapes-tiny.json"
CLIP_WEIGHTS = ASSETS / "shapes" / "clip.safetensors"


def load_tiny_clip():
    """The tiny shapes-world CLIP that build_fixtures.py writes."""
    from lib_clipcap.clip import ClipBackbone

    return ClipBackbone.load(str(CLIP_CONFIG), str(CLIP_WEIGHTS))


def train(model: torch.nn.Module, steps: int, *, lr: float, weight_decay: float, seed: int, name: str,
          loss_at: Callable[[int, torch.Generator], torch.Tensor], clip_grad: float | None = None,
          after_step: Callable[[], None] | None = None) -> None:
    """Train ``model`` for ``steps`` steps with AdamW and a one-cycle schedule (peak ``lr``, 10 % warm-up), then put it
    in eval mode.

    ``loss_at(step, g)`` returns a step's loss; ``g`` is a CPU generator seeded with ``seed``, for drawing the batch.
    Gradients are clipped to norm ``clip_grad`` when given; ``after_step()`` runs after each optimizer step. The loss
    is printed every 200 steps and at the last, as ``{name} step N loss L (Ts)``.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    model.train()
    for step in range(steps):
        loss = loss_at(step, g)
        opt.zero_grad()
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        if step % 200 == 0 or step == steps - 1:
            print(f"{name} step {step} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
