"""Fixtures for the host-mode tests: a booted WebUI double per mode, and fake captioning models.

Every test that takes ``mode`` runs twice: against the A1111 double and against the Forge double, whatever gradio is
installed (tools/test.sh runs this folder under A1111's pins, Forge's pins, and the main venv).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webui_double  # noqa: E402

MODES = ("a1111", "forge")


# The fast tier (-m "not slow") runs each host test once, against the A1111 double; the full run adds Forge.
@pytest.fixture(params=[pytest.param(m, marks=pytest.mark.slow) if m == "forge" else m for m in MODES])
def mode(request) -> str:
    return request.param


@pytest.fixture
def make_webui(tmp_path):
    """``make(mode, argv=(), config=None)`` (config.json; default model ``shapes-demo``) -> a booted :class:`webui_double.WebUI` (shut down after the test)."""
    made: list[webui_double.WebUI] = []

    def make(mode: str, argv=(), config: dict | None = None) -> webui_double.WebUI:
        root = tmp_path / f"webui-{len(made)}"
        root.mkdir()
        config = {"clipcap_model": "shapes-demo", **(config or {})}  # the only model installed offline
        (root / "config.json").write_text(json.dumps(config))
        w = webui_double.WebUI(mode, root, argv)
        made.append(w)
        return w.boot()

    yield make
    from lib_clipcap.app import service

    from clipcap_webui import models

    models.adopt()  # cancel a pending free timer
    service.reset_default_manager()
    for w in reversed(made):
        w.shutdown()


@pytest.fixture
def webui(mode, make_webui) -> webui_double.WebUI:
    return make_webui(mode)


class FakeCaptioner:
    """Stands in for a Captioner: records device moves and the host state seen during each call."""

    def __init__(self, name: str) -> None:
        import torch

        self.name = name
        self.model = torch.nn.Linear(4, 4)  # what Forge's ModelPatcher gets (via clipcap_webui.memory.torch_module)
        self.moves: list[tuple[str | None, object]] = []
        self.calls: list[dict] = []
        self.unloaded = False

    def to(self, device=None, dtype=None):
        self.moves.append((None if device is None else str(device), dtype))
        return self

    def caption(self, images, **kwargs):
        from lib_clipcap.captioner import Candidate, CaptionResult
        from modules import call_queue, devices

        images = list(images) if isinstance(images, (list, tuple)) else [images]
        self.calls.append({"queue_locked": call_queue.queue_lock.locked(), "kwargs": kwargs,
                           "torch_gc_calls": devices.torch_gc_calls, "sizes": [im.size for im in images]})
        out = []
        for im in images:
            text = f"a {im.width}x{im.height} picture"
            out.append(CaptionResult(text=text, score=-1.0, candidates=[Candidate(text, -1.0)]))
        return out

    def unload(self) -> None:
        self.unloaded = True


class FakeLoader:
    def __init__(self) -> None:
        self.loaded: list[FakeCaptioner] = []

    def __call__(self, name: str) -> FakeCaptioner:
        model = FakeCaptioner(name)
        self.loaded.append(model)
        return model


@pytest.fixture
def fake_models():
    """``install()`` -> a :class:`FakeLoader` behind the process-wide manager (call it after booting the host)."""

    def install() -> FakeLoader:
        from lib_clipcap.app import service

        from clipcap_webui import host, memory

        loader = FakeLoader()
        service.reset_default_manager()
        service.default_manager(models_dir=host.models_dir(), policy=memory.make_policy(), max_loaded=1,
                                loader=loader)
        return loader

    return install
