"""One place says which host runs and what it offers (``clipcap_webui.host``), and the extension touches nothing else.

Every host test is audited by conftest.py's ``make_webui`` (tests/host/_host_audit.py): it fails when the extension
touched a host module, attribute, ``cmd_opts`` flag or setting missing from ``host.CAPABILITIES`` / ``FLAGS`` /
``SETTINGS`` for that host. This file checks the audit itself, the declarations against each host's removals, and
the detection.
"""

from __future__ import annotations

import pytest

import _host_audit
from webui_double import REPO


@pytest.mark.parametrize("mode, memory, interrogator", [
    ("a1111", "a1111", True), ("forge", "backend", True), ("neo", "backend", False), ("classic", "ldm_patched", False),
])
def test_host_info_names_the_host_and_what_it_offers(make_webui, mode, memory, interrogator):
    make_webui(mode)
    from clipcap_webui import host, requirements

    info = host.host_info()
    assert (info.name, info.memory, info.interrogator) == (mode, memory, interrogator)
    assert info.forge_ui is (mode != "a1111")
    assert requirements.detect_host() == mode  # install.py's cheap detection agrees
    if mode == "neo":
        assert info.version == "neo" and info.label == "Forge Neo"


@pytest.mark.parametrize("mode", ["a1111", "forge", "neo", "classic"])
def test_declarations_never_name_what_a_host_removed(mode):
    from clipcap_webui import host

    caps = host.CAPABILITIES[mode]
    for gone in host.REMOVED[mode]:
        assert not [m for m in caps if m == gone or m.startswith(gone + ".")], (mode, gone)
        parent, _, leaf = gone.rpartition(".")
        assert leaf not in caps.get(parent, ()), (mode, gone)


@pytest.fixture(autouse=True)
def _double_mode_module(monkeypatch):
    """Expose the double's removal table (tests/host/double/modules/_mode.py) without importing ``modules``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("modules_double_mode",
                                                  REPO / "tests" / "host" / "double" / "modules" / "_mode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "modules_double_mode", mod)
    yield mod


@pytest.mark.parametrize("mode", ["a1111", "forge", "neo", "classic"])
def test_the_double_removes_what_the_declarations_say(mode, _double_mode_module):
    from clipcap_webui import host

    assert set(_double_mode_module.REMOVED[mode]) == set(host.REMOVED[mode])


def _extension_code(source: str):
    """Run ``source`` as if it were a file of the extension (the audit tells extension code by its file name)."""
    code = compile(source, str(REPO / "clipcap_webui" / "_audit_probe.py"), "exec")
    exec(code, {"__name__": "clipcap_webui._audit_probe"})


@pytest.mark.no_host_audit  # it touches undeclared attributes on purpose
@pytest.mark.parametrize("mode", ["neo", "classic"])
def test_the_audit_catches_an_undeclared_host_attribute(make_webui, mode):
    make_webui(mode)
    with _host_audit.audit() as rec:
        _extension_code("from modules import shared\nshared.opts\ngetattr(shared, 'interrogator', None)\n"
                        "from clipcap_webui import host\nhost.cmd_opt('medvram')\nhost.opt('sd_model_checkpoint')\n")
    problems = _host_audit.undeclared(rec, mode)
    assert "modules.shared.interrogator" in problems  # Neo and Classic have no shared.interrogator
    assert "--medvram (cmd_opts.medvram)" in problems and "setting sd_model_checkpoint" in problems
    assert not [p for p in problems if "shared.opts" in p]  # declared
    with _host_audit.audit() as rec:
        _extension_code("import importlib\nimportlib.import_module('modules.lowvram')\n")
    assert any("modules.lowvram" in p for p in _host_audit.undeclared(rec, mode))


# the modes of this run (conftest's ``mode``): the faces need the packages of the host's pins (Neo's open_clip)
def test_the_faces_touch_only_declared_host_attributes(make_webui, fake_models, mode):
    """Boot, UI (tab, buttons, settings, generation section, Extras step), API with --api-auth, a caption through
    the host's memory manager, and a UI reload, audited explicitly (the rest of the suite is audited too)."""
    from fastapi.testclient import TestClient

    webui = make_webui(mode, argv=["--api", "--api-auth", "u:p"])
    with _host_audit.audit() as rec:
        webui.create_ui()
        fake_models()
        client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
        import base64
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        r = client.post("/clipcap/v1/caption", json={"image": base64.b64encode(buf.getvalue()).decode()},
                        headers={"Authorization": "Basic " + base64.b64encode(b"u:p").decode()})
        assert r.status_code == 200, r.text
        webui.reload_ui()
    assert rec.attrs, "the audit saw nothing"
    assert ("modules.script_callbacks", "on_ui_tabs") in rec.attrs
    assert _host_audit.undeclared(rec, mode) == []
    assert webui.errors() == []
