"""Fixtures for the host-mode tests: a booted WebUI double per mode, and fake captioning models.

Every test that takes ``mode`` runs against each host double: A1111, Forge, Forge Neo and Forge Classic, whatever
gradio is installed (tools/test.sh runs this folder under each host's pins and the main venv). ``CLIPCAP_HOST_MODES``
(space- or comma-separated) narrows the modes, e.g. ``neo`` under Neo's pins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webui_double  # noqa: E402

ALL_MODES = webui_double.MODES  # a1111, forge, neo, classic
MODES = tuple(m for m in re.split(r"[,\s]+", os.environ.get("CLIPCAP_HOST_MODES", "")) if m) or ALL_MODES
assert set(MODES) <= set(ALL_MODES), MODES


# The fast tier (-m "not slow") runs each host test once, against the first mode (A1111 by default); the full run
# adds the others.
@pytest.fixture(params=[pytest.param(m, marks=pytest.mark.slow) if m != MODES[0] else m for m in MODES])
def mode(request) -> str:
    return request.param


@pytest.fixture
def make_webui(tmp_path, request):
    """``make(mode, argv=(), config=None)`` (config.json; default model ``shapes-demo``) -> a booted :class:`webui_double.WebUI` (shut down after the test).

    Every host test is audited (tests/host/_host_audit.py): a test fails when the extension touched a host module,
    attribute, flag or setting that ``clipcap_webui.host.CAPABILITIES`` / ``FLAGS`` / ``SETTINGS`` do not declare
    for the host it ran in (``@pytest.mark.no_host_audit`` opts a test out)."""
    import _host_audit

    made: list[webui_double.WebUI] = []
    audited = request.node.get_closest_marker("no_host_audit") is None
    audits: list[tuple[str, _host_audit.Record]] = []
    stack = contextlib.ExitStack()

    def make(mode: str, argv=(), config: dict | None = None) -> webui_double.WebUI:
        root = tmp_path / f"webui-{len(made)}"
        root.mkdir()
        config = {"clipcap_model": "shapes-demo", **(config or {})}  # the only model installed offline
        (root / "config.json").write_text(json.dumps(config))
        w = webui_double.WebUI(mode, root, argv)
        made.append(w)
        if audited:
            audits.append((mode, stack.enter_context(_host_audit.audit())))
        return w.boot()

    yield make
    stack.close()
    from lib_clipcap.app import service

    from clipcap_webui import models

    models.adopt()  # cancel a pending free timer
    service.reset_default_manager()
    for w in reversed(made):
        w.shutdown()
    problems = sorted({f"{m}: {p}" for m, rec in audits for p in _host_audit.undeclared(rec, m)})
    assert not problems, ("the extension touched host attributes its per-host capability list "
                          "(clipcap_webui/host.py CAPABILITIES/FLAGS/SETTINGS) does not declare: " + "; ".join(problems))


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


def pytest_configure(config):
    config.addinivalue_line("markers", "no_host_audit: do not check the host attributes this test's extension touched "
                                       "against clipcap_webui.host.CAPABILITIES")
