"""Adding a decoding setting touches the options table and the decoder, nothing else.

The test adds one, ``max_words``, the way a contributor would: a row appended to :data:`OPTIONS` and a field of
:class:`DecodingOptions` (a subclass put in its place), with the decoder recording the value it decodes with. Nothing
else is changed, and the setting must then reach the decoder from every face: the ``caption`` and ``tag`` command
lines, the HTTP API (which refuses a bad value with a 422 naming the field), batch options, the WebUI settings and
the gradio UI.

Both edits are made in a fresh interpreter before the rest of the library is imported, as an edit of the source
would be: faces built when their module is imported (the API's request model, TagOptions' fields) must be generated
from the table too, not only those that read it per call. The child writes what each face did to a JSON file; the
test checks it here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = "shapes-demo"
SETTING = "max_words"
FLAG = "--max-words"


# ------------------------------------------------------------------------------------ the child: the two edits
def add_the_setting(seen: list) -> None:
    """The two edits a new decoding setting needs: a table row and a decoder field (the decoder appends the value
    each decode call runs with to ``seen``)."""
    import dataclasses

    from lib_clipcap import decoding, options_table

    row = options_table.Option(SETTING, int, 0, "Max words", "Longest caption, in words (0: no limit).",
                               minimum=0, maximum=100, ui_max=30, step=1, caption_kwarg=SETTING)
    options_table.OPTIONS = options_table.OPTIONS + (row,)
    options_table._BY_KEY[SETTING] = row

    @dataclasses.dataclass(frozen=True)
    class WithMaxWords(decoding.DecodingOptions):
        max_words: int = 0

    original = decoding.decode

    def decode(lm, prefix, options, **kw):
        seen.append(getattr(options, SETTING))
        return original(lm, prefix, options, **kw)

    decoding.DecodingOptions = WithMaxWords
    decoding.decode = decode


def _image(folder: Path, name: str = "scene.png") -> Path:
    from lib_clipcap import shapes

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    shapes.heldout_scenes(1)[0].render().save(path)
    return path


def _cli(argv: list[str]) -> dict[str, Any]:
    """Run ``python -m lib_clipcap`` in this process; its exit status and what it wrote to stderr."""
    import contextlib
    import io

    from lib_clipcap.app.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return {"rc": rc, "err": err.getvalue(), "out": out.getvalue()}


def _command_lines(work: Path, seen: list) -> dict[str, Any]:
    models = str(work / "models")
    image = _image(work / "img")
    got: dict[str, Any] = {"caption_help": _cli(["caption", "--help"])["out"]}
    seen.clear()
    got["caption"] = _cli(["caption", str(image), "--model", DEMO, "--models-dir", models, "--device", "cpu",
                           "--decoding", "greedy", FLAG, "7"])
    got["caption_seen"] = list(seen)
    got["caption_bad"] = _cli(["caption", str(image), "--model", DEMO, FLAG, "-1"])
    seen.clear()
    folder = work / "dataset"
    _image(folder)
    got["tag"] = _cli(["tag", str(folder), "--model", DEMO, "--models-dir", models, "--device", "cpu",
                       "--workers", "0", FLAG, "5"])
    got["tag_seen"] = list(seen)
    got["tag_written"] = (folder / "scene.txt").is_file()
    return got


def _batch_options(work: Path) -> dict[str, Any]:
    from lib_clipcap.batch import TagOptions
    from lib_clipcap.errors import ClipCapError

    got: dict[str, Any] = {"default": getattr(TagOptions(inputs=[str(work)]), SETTING, "missing")}
    got["settings"] = TagOptions(inputs=[str(work)], **{SETTING: 4}).decoding_settings().get(SETTING)
    try:
        TagOptions(inputs=[str(work)], **{SETTING: 101})
        got["bad"] = "accepted"
    except ClipCapError as e:
        got["bad"] = str(e)
    return got


def _api(work: Path, captioner: Any, seen: list) -> dict[str, Any]:
    import base64
    import io

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_clipcap import shapes
    from lib_clipcap.app.api import API_PREFIX, mount_api
    from lib_clipcap.app.service import ModelManager

    app = FastAPI()
    mount_api(app, ModelManager(models_dir=work / "models", loader=lambda name: captioner), default_model=DEMO)
    client = TestClient(app)
    buf = io.BytesIO()
    shapes.heldout_scenes(1)[0].render().save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    seen.clear()
    ok = client.post(f"{API_PREFIX}/caption", json={"image": image, "decoding": "greedy", SETTING: 6})
    got: dict[str, Any] = {"status": ok.status_code, "seen": list(seen)}
    bad = client.post(f"{API_PREFIX}/caption", json={"image": image, SETTING: -1})
    got["bad_status"], got["bad_body"] = bad.status_code, bad.text
    schema = client.get("/openapi.json").json()
    body = schema["paths"][f"{API_PREFIX}/caption"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    got["schema_fields"] = sorted(body.get("properties", {}))
    return got


def _webui_settings() -> dict[str, Any]:
    from lib_clipcap.options_table import from_settings, settings_entries

    entries = {e["key"]: e for e in settings_entries()}
    stored = {"clipcap_" + SETTING: 9}
    return {"entry": entries.get(SETTING), "read": from_settings(lambda k, d: stored.get(k, d)).get(SETTING)}


def _ui(work: Path, captioner: Any, seen: list) -> dict[str, Any]:
    from lib_clipcap import shapes
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.app.ui import build_ui

    demo = build_ui(ModelManager(models_dir=work / "models", loader=lambda name: captioner), values={"model": DEMO})
    ids = [getattr(b, "elem_id", None) for b in demo.blocks.values()]
    ctl = demo.clipcap
    values = {k: demo.clipcap_components[k].value for k in ctl.option_keys}
    values.update(decoding="greedy", **{SETTING: 3})
    seen.clear()
    text, _, status = ctl.caption(shapes.heldout_scenes(1)[0].render(), DEMO, *values.values())
    return {"components": ids.count(f"clipcap_opt_{SETTING}"), "text": text, "status": status, "seen": list(seen)}


def child(out: str) -> None:
    """Make the two edits, then drive every face; write what each did to ``out`` (JSON)."""
    seen: list = []
    add_the_setting(seen)
    from lib_clipcap import Captioner

    work = Path(out).parent
    captioner = Captioner.from_pretrained(DEMO, device="cpu")
    faces = {"cli": lambda: _command_lines(work, seen), "batch": lambda: _batch_options(work),
             "api": lambda: _api(work, captioner, seen), "webui": _webui_settings,
             "ui": lambda: _ui(work, captioner, seen)}
    got = {name: _observe(face) for name, face in faces.items()}
    Path(out).write_text(json.dumps(got, default=str), encoding="utf-8")


def _observe(face) -> dict[str, Any]:
    """What ``face()`` reports, or the traceback it raised (one broken face must not hide what the others did)."""
    import traceback

    try:
        return face()
    except Exception:  # noqa: BLE001 - reported by the test of that face
        return {"crashed": traceback.format_exc()}


# ------------------------------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("gradio")
    out = tmp_path_factory.mktemp("added") / "faces.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    code = f"import test_add_setting as t; t.child({str(out)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8"))


def _face(faces: dict[str, Any], name: str) -> dict[str, Any]:
    got = faces[name]
    assert "crashed" not in got, got.get("crashed")
    return got


def test_the_caption_command_has_the_flag_and_passes_it_to_the_decoder(faces):
    cli = _face(faces, "cli")
    assert FLAG in cli["caption_help"]
    assert cli["caption"]["rc"] == 0, cli["caption"]["err"]
    assert cli["caption_seen"] == [7]
    assert cli["caption_bad"]["rc"] == 2
    assert f"{FLAG} -1: must be at least 0" in cli["caption_bad"]["err"]  # named as typed, before any model loads


def test_the_tag_command_and_batch_options_carry_it_to_the_decoder(faces):
    cli, batch = _face(faces, "cli"), _face(faces, "batch")
    assert cli["tag"]["rc"] == 0, cli["tag"]["err"]
    assert cli["tag_seen"] == [5] and cli["tag_written"]
    assert batch["default"] == 0 and batch["settings"] == 4
    assert batch["bad"] == f"{SETTING}=101 is invalid: must be at most 100"


def test_the_http_api_accepts_it_and_refuses_a_bad_value_naming_it(faces):
    api = _face(faces, "api")
    assert api["status"] == 200 and api["seen"] == [6]
    assert api["bad_status"] == 422 and SETTING in api["bad_body"], api["bad_body"]
    assert SETTING in api["schema_fields"]


def test_the_webui_settings_and_the_ui_offer_it(faces):
    webui, ui = _face(faces, "webui"), _face(faces, "ui")
    assert webui["entry"] is not None and webui["entry"]["settings_key"] == "clipcap_" + SETTING
    assert webui["entry"]["component"] == "slider" and webui["entry"]["component_args"]["maximum"] == 30
    assert webui["read"] == 9
    assert ui["components"] == 1
    assert ui["text"] and ui["seen"] == [3], ui["status"]
