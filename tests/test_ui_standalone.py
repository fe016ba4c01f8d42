"""The gradio UI (build_ui) under the installed gradio, the options table that feeds it, and the standalone server."""

from __future__ import annotations

import base64
import inspect
import io
import subprocess
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from lib_clipcap import compat, shapes  # noqa: E402
from lib_clipcap.options_table import (  # noqa: E402
    OPTIONS,
    OptionError,
    caption_kwargs,
    decoding_keys,
    decoding_options,
    defaults,
    from_settings,
    get_option,
    settings_entries,
    validate_options,
)
from lib_clipcap.app.service import ModelManager  # noqa: E402
from lib_clipcap.app.ui import CANDIDATE_HEADERS, build_ui  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = "shapes-demo"


class KeepLoaded:
    """The shared demo captioner behind a manager; ``unload`` is counted but leaves it usable for other tests."""

    def __init__(self, inner):
        self.inner = inner
        self.unloads = 0

    def caption(self, images, **kw):
        return self.inner.caption(images, **kw)

    def unload(self):
        self.unloads += 1

    def __getattr__(self, name):  # batch jobs use the captioner's lower-level methods
        return getattr(self.inner, name)


@pytest.fixture
def manager(demo_captioner, tmp_path):
    return ModelManager(models_dir=tmp_path, loader=lambda name: KeepLoaded(demo_captioner))


def find(demo, elem_id: str):
    found = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, f"{elem_id}: {len(found)} components"
    return found[0]


def choice_values(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in component.choices]


def ui_values(demo) -> list:
    ctl = demo.clipcap
    return [demo.clipcap_components[k].value for k in ctl.option_keys]


@pytest.fixture
def image():
    return shapes.heldout_scenes(1)[0].render()


# -------------------------------------------------------------------------------------------------- options table
def test_ui_api_settings_and_captioner_agree_with_the_options_table(manager, demo_captioner, image):
    from lib_clipcap.app.api import CaptionRequest
    from lib_clipcap.captioner import Captioner

    demo = build_ui(manager, values={"model": DEMO})
    for opt in OPTIONS:
        comp = find(demo, opt.elem_id)
        assert comp.label == opt.label, opt.key
        if opt.key != "model":
            assert comp.value == opt.ui_value(opt.default), opt.key
        args = opt.component_args()
        for k in ("minimum", "maximum", "step"):
            if k in args:
                assert getattr(comp, k) == args[k], (opt.key, k)
        if opt.choices:
            assert choice_values(comp) == list(opt.choices), opt.key
    # API request schema: the same fields and defaults
    props = compat.model_json_schema(CaptionRequest)["properties"]
    assert set(props) == {"image"} | {o.api_field for o in OPTIONS}
    for o in OPTIONS:
        if o.key != "model":
            assert props[o.api_field].get("default") == (list(o.default) if o.type is list else o.default), o.key
    # WebUI settings: clipcap_<key>, same labels, defaults in the UI's form
    entries = settings_entries()
    assert [e["settings_key"] for e in entries] == [f"clipcap_{o.key}" for o in OPTIONS]
    for e, o in zip(entries, OPTIONS):
        assert (e["label"], e["component"], e["default"]) == (o.label, o.component, o.ui_value(o.default))
    # the captioner takes every caption option of the table: re-ranking by name, the decoding settings by the table's
    # names (resolved by options_table.resolve_decoding); none other than batch_size is the captioner's own
    params = set(inspect.signature(Captioner.caption).parameters) - {"self", "images", "batch_size", "settings"}
    assert {o.caption_kwarg for o in decoding_options()} == params | set(decoding_keys())
    # defaults, in every form, are valid and the captioner accepts them
    for o in OPTIONS:
        assert o.coerce(o.ui_value(o.default)) == (list(o.default) if o.type is list else o.default), o.key
    assert demo_captioner.caption(image, **caption_kwargs(defaults()))[0].ok


def test_option_values_are_checked_with_the_field_and_value_named():
    with pytest.raises(OptionError, match=r"temperature=0 is invalid: must be greater than 0"):
        validate_options({"temperature": 0})
    with pytest.raises(OptionError, match=r"decoding='nucleus' is invalid: must be one of greedy, beam, sample"):
        validate_options({"decoding": "nucleus"})
    with pytest.raises(OptionError, match=r"beam_size=2.5 is invalid: must be a whole number"):
        validate_options({"beam_size": 2.5})
    with pytest.raises(OptionError, match=r"unknown setting"):
        validate_options({"beams": 2})
    ok = validate_options({"beam_size": 4.0, "seed": -1, "banned_words": "red, , blue ", "top_p": 1})
    assert ok["beam_size"] == 4 and ok["seed"] is None and ok["banned_words"] == ["red", "blue"]
    assert isinstance(ok["top_p"], float)
    # hand-edited WebUI settings fall back to the defaults instead of breaking the tab
    settings = {"clipcap_temperature": -3, "clipcap_decoding": "sample", "clipcap_model": "coco"}
    values = from_settings(lambda k, d: settings.get(k, d))
    assert values["temperature"] == 1.0 and values["decoding"] == "sample" and values["model"] == "coco"


# ------------------------------------------------------------------------------------------------------ build_ui
def test_build_ui_captions_and_shows_candidates(manager, image, demo_captioner):
    demo = build_ui(manager, values={"model": DEMO})
    assert isinstance(demo, gr.Blocks)
    for elem_id in ("clipcap_image", "clipcap_caption", "clipcap_candidates", "clipcap_caption_button",
                    "clipcap_batch_folder", "clipcap_models_table", "clipcap_download", "clipcap_unload"):
        find(demo, elem_id)
    assert not [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "clipcap_send_row"]
    ctl = demo.clipcap
    assert find(demo, "clipcap_opt_model").value == DEMO
    values = ui_values(demo)
    text, rows, status = ctl.caption(image, DEMO, *values)
    expected = demo_captioner.caption(image, **caption_kwargs(ctl.values(values)))[0]
    assert text == expected.text and text.endswith(".")
    assert [r[1] for r in rows] == [c.text for c in expected.candidates]
    assert len(rows) == get_option("num_candidates").default and all(len(r) == len(CANDIDATE_HEADERS) for r in rows)
    assert status.startswith(f"{DEMO}: 3 candidates in")
    # the option components really steer the caption
    greedy = dict(ctl.values(values), decoding="greedy", max_new_tokens=2)
    short, rows, _ = ctl.caption(image, DEMO, *greedy.values())
    assert len(rows) == 1 and len(short.split()) <= 2


def test_handlers_report_errors_in_the_status_box(manager, image):
    demo = build_ui(manager, values={"model": DEMO})
    ctl = demo.clipcap
    values = ctl.values(ui_values(demo))
    assert ctl.caption(None, DEMO, *values.values()) == ("", [], "Upload an image first.")
    _, _, status = ctl.caption(image, "no-such-model", *values.values())
    assert status.startswith("**Error:** Unknown model 'no-such-model'") and DEMO in status
    _, _, status = ctl.caption(image, DEMO, *dict(values, temperature=0).values())
    assert status == "**Error:** temperature=0 is invalid: must be greater than 0"
    _, _, status = ctl.caption(image, DEMO, *dict(values, beam_size=2, num_candidates=5).values())
    assert "num_candidates=5" in status and "beam_size" in status
    _, _, status = ctl.caption(b"not an image", DEMO, *values.values())
    assert status.startswith("**Error:** Cannot load image")


def test_host_gets_its_send_buttons_and_supplies_defaults(manager):
    calls = []

    class Host:
        def add_send_buttons(self, image_component, text_component):
            calls.append((image_component.elem_id, text_component.elem_id))
            gr.Button("Send to txt2img", elem_id="fake_send_txt2img")

        def option_values(self):
            return {"decoding": "sample", "temperature": 0.7, "model": DEMO}

    demo = build_ui(manager, host=Host())
    assert calls == [("clipcap_image", "clipcap_caption")]
    find(demo, "fake_send_txt2img")
    assert find(demo, "clipcap_opt_decoding").value == "sample"
    assert find(demo, "clipcap_opt_temperature").value == 0.7
    assert find(demo, "clipcap_opt_model").value == DEMO
    assert find(demo, "clipcap_notice").value == ""  # the demo model was asked for: no fallback notice


def test_missing_default_model_falls_back_to_the_demo_with_a_notice(manager):
    demo = build_ui(manager)  # the table's default (flickr8k) is not in the test's empty models folder
    assert find(demo, "clipcap_opt_model").value == DEMO
    notice = find(demo, "clipcap_notice").value
    assert "flickr8k" in notice and DEMO in notice and "Models section" in notice


def test_models_section_lists_downloads_and_unloads(manager, image, tmp_path):
    demo = build_ui(manager, values={"model": DEMO})
    ctl = demo.clipcap
    rows = {r[0]: r for r in ctl.model_rows()}
    assert rows[DEMO][2] == "yes" and rows["flickr8k"][2] == "no" and rows[DEMO][3] == ""
    ctl.caption(image, DEMO, *ui_values(demo))
    assert {r[0]: r for r in ctl.model_rows()}[DEMO][3] == "yes"
    assert list(ctl.download(DEMO))[-1][0].startswith(f"{DEMO} is installed")
    manual = list(ctl.download("coco"))[-1][0]
    assert "coco_weights.pt" in manual and str(tmp_path) in manual and "github.com/rmokady" in manual
    offline = list(ctl.download("flickr8k", poll=0.05))[-1][0]  # tests run with HF_HUB_OFFLINE=1
    assert offline.startswith("**Error:**") and "offline" in offline and str(tmp_path) in offline
    msg, rows = ctl.unload(DEMO)
    assert msg == f"Unloaded {DEMO}." and {r[0]: r for r in rows}[DEMO][3] == ""
    assert ctl.unload("")[0] == "Nothing to unload."


# ---------------------------------------------------------------------------------------------------------- batch
def batch_values(demo) -> list:
    from lib_clipcap.batch.ui import BATCH_FIELDS

    return [find(demo, f"clipcap_batch_{name}").value for name, *_ in BATCH_FIELDS]


def test_batch_section_explains_when_batch_tagging_is_off(manager):
    demo = build_ui(manager, values={"model": DEMO})
    assert "not enabled" in find(demo, "clipcap_batch_info").value
    assert find(demo, "clipcap_batch_start").interactive is False
    updates = list(demo.clipcap_batch.batch_start("/tmp", DEMO, *batch_values(demo), *ui_values(demo)))
    assert updates[-1][1].startswith("Batch tagging is not enabled")


def test_batch_section_tags_a_folder_and_reports_failures(manager, tmp_path):
    pytest.importorskip("lib_clipcap.batch")
    from lib_clipcap.batch.jobs import JobManager
    from lib_clipcap.batch.ui import BATCH_FIELDS

    folder = tmp_path / "set"
    folder.mkdir()
    for i, scene in enumerate(shapes.heldout_scenes(2)):
        scene.render().save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("old caption", encoding="utf-8")
    (folder / "empty.png").write_bytes(b"")
    jobs = JobManager(manager, [tmp_path])
    demo = build_ui(manager, job_manager=jobs, values={"model": DEMO, "decoding": "greedy", "max_new_tokens": 12})
    assert find(demo, "clipcap_batch_start").interactive is not False
    assert find(demo, "clipcap_batch_existing").value == "skip" and find(demo, "clipcap_batch_recursive").value
    batch = dict(zip([n for n, *_ in BATCH_FIELDS], batch_values(demo)), existing="append", prefix="sks")
    updates = list(demo.clipcap_batch.batch_start(str(folder), DEMO, *batch.values(), *ui_values(demo), poll=0.05))
    job_id = updates[-1][0]
    assert job_id and all(u[0] == job_id for u in updates)
    final = updates[-1][1]
    assert "**done**" in final and "empty.png" in final, final
    assert "written 2, already done (resume) 0, had a caption (policy) 0, failed 1" in final, final
    assert jobs.status(job_id)["options"]["decoding"] == "greedy"  # the batch default, whatever the panel says
    assert (folder / "img0.txt").read_text(encoding="utf-8").startswith("old caption, sks, ")
    assert (folder / "img1.txt").read_text(encoding="utf-8").startswith("sks, ")
    assert jobs.status(job_id)["options"]["max_new_tokens"] == 12
    assert f"Job `{job_id}`" in demo.clipcap_batch.batch_cancel(job_id)
    assert demo.clipcap_batch.batch_cancel("") == "No batch job is running."
    # runs and undo from the tab, with the batch section's folder rules
    listed = demo.clipcap_batch.batch_runs(str(folder))
    assert "| Run |" in listed and "append" in listed, listed
    undone = demo.clipcap_batch.batch_undo(str(folder), "")
    assert "restored 1, removed 1" in undone, undone
    assert (folder / "img0.txt").read_text(encoding="utf-8") == "old caption" and not (folder / "img1.txt").exists()
    assert "outside" in demo.clipcap_batch.batch_undo("/", "")
    trig = demo.clipcap_batch.make_tag_options(str(folder), {"decoding": "beam", "beam_size": 4}, {"triggers": "sks, ohwx"})
    assert trig.triggers == ["sks", "ohwx"] and trig.decoding == "greedy"
    bad = dict(batch, caption_ext="txt")
    out = list(demo.clipcap_batch.batch_start(str(folder), DEMO, *bad.values(), *ui_values(demo)))[-1][1]
    assert out.startswith("**Error:** caption_ext='txt' is invalid"), out
    out = list(demo.clipcap_batch.batch_start("/", DEMO, *batch.values(), *ui_values(demo)))[-1][1]
    assert out.startswith("**Error:**") and "outside" in out, out
    assert list(demo.clipcap_batch.batch_start("  ", DEMO, *batch.values(), *ui_values(demo)))[-1][1] == \
        "Enter a folder of images first."


def test_batch_section_writes_tags_with_the_trigger_first(manager, tmp_path):
    """Issue 22 in the tab: 'Write: tags' gives a kohya-style sidecar from the section's vocabulary, exclude list and
    threshold, trigger first; a bad threshold is an error naming the field."""
    from lib_clipcap.batch.jobs import JobManager
    from lib_clipcap.batch.ui import BATCH_FIELDS

    folder = tmp_path / "set"
    folder.mkdir()
    scene = shapes.heldout_scenes(1)[0]
    scene.render().save(folder / "img0.png")
    demo = build_ui(manager, job_manager=JobManager(manager, [tmp_path]), values={"model": DEMO})
    assert find(demo, "clipcap_batch_content").value == "caption"  # the default: the sentence, as before
    assert find(demo, "clipcap_batch_tag_threshold").value == pytest.approx(0.3)
    batch = dict(zip([n for n, *_ in BATCH_FIELDS], batch_values(demo)), content="tags", triggers="sks",
                 tag_vocabulary="shapes", tag_exclude="white background, black background")
    final = list(demo.clipcap_batch.batch_start(str(folder), DEMO, *batch.values(), *ui_values(demo), poll=0.05))
    assert "**done**" in final[-1][1], final[-1][1]
    tags = (folder / "img0.txt").read_text(encoding="utf-8").split(", ")
    assert tags[0] == "sks" and len(tags) > 1 and not {"white background", "black background"} & set(tags), tags
    bad = dict(batch, tag_threshold=3)
    out = list(demo.clipcap_batch.batch_start(str(folder), DEMO, *bad.values(), *ui_values(demo)))[-1][1]
    assert out.startswith("**Error:** tag_threshold=3.0 is invalid"), out


# --------------------------------------------------------------------------------------------------------- server
def test_standalone_app_serves_ui_and_api_with_optional_auth(manager):
    from fastapi.testclient import TestClient

    from lib_clipcap.app.server import create_app

    with TestClient(create_app(manager, default_model=DEMO), base_url="http://127.0.0.1:7861") as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert client.get("/clipcap/v1/models").json()["default"] == DEMO
        assert client.get("/docs").status_code == 404  # API docs only with --api-docs
    # with the docs switched on, the password guards them like every other page
    app = create_app(manager, default_model=DEMO, credentials={"ann": "pw"}, api_docs=True)
    good = {"Authorization": "Basic " + base64.b64encode(b"ann:pw").decode()}
    with TestClient(app, base_url="http://127.0.0.1:7861") as client:
        for path in ("/", "/clipcap/v1/models", "/docs"):
            r = client.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            assert r.json()["error"]["type"] == "unauthorized"
            assert client.get(path, headers=good).status_code == 200
        buf = io.BytesIO()
        shapes.heldout_scenes(1)[0].render().save(buf, "PNG")
        r = client.post("/clipcap/v1/caption", json={"image": base64.b64encode(buf.getvalue()).decode()},
                        headers=good)
        assert r.status_code == 200 and r.json()["caption"].endswith(".")


def test_serve_command_is_registered_and_imports_cheaply():
    from lib_clipcap.app.cli import build_parser
    from lib_clipcap.app.security import is_loopback_host as _is_loopback

    args = build_parser().parse_args(["serve", "--auth", "a:b", "--batch-root", "/data", "--demo",
                                      "--cors-allow-origin", "https://a.example", "--caption-ext", ".cap"])
    assert (args.host, args.port, args.auth, args.demo) == ("127.0.0.1", 7861, ["a:b"], True)
    assert (args.cors_allow_origin, args.caption_ext, args.allow_host) == (["https://a.example"], [".cap"], [])
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert _is_loopback("[::1]") and _is_loopback("127.0.0.2") and _is_loopback("app.localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5") and not _is_loopback("localhost.evil.io")
    code = ("import sys, lib_clipcap.app.server, lib_clipcap.options_table, lib_clipcap.compat; "
            "print(sorted(m for m in ('gradio', 'fastapi', 'uvicorn', 'torch', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
