"""The extension inside the WebUI double: loading, callbacks, the Caption tab, settings, prompt buttons, reload.

Each test runs against the A1111 double and the Forge double (``mode``) with the gradio of the running venv.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

import webui_double as wd

CATEGORIES = ("ui_settings", "ui_tabs", "after_component", "app_started", "script_unloaded")


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_script_loads_by_path_and_registers_each_callback_once(webui):
    from modules import scripts, script_loading

    paths = [p for p in script_loading.loaded_scripts if "clipcap_tab.py" in p]
    assert paths and paths[0].startswith(str(webui.extension_dir))
    module = script_loading.loaded_scripts[paths[0]]
    assert module.__name__ == "clipcap_tab.py"  # loaded by path, under its file name
    assert "clipcap_tab.py" not in __import__("sys").modules
    assert module.EXTENSION_DIR == str(webui.extension_dir)  # scripts.basedir() saved during the import
    for category in CATEGORIES:
        names = [c.name for c in webui.callbacks(category)]
        assert names == [f"{wd.EXTENSION_NAME}/clipcap_tab.py/{category}"], category
    assert not [s for s in scripts.scripts_data if s.path == paths[0]]  # no Script class (not even the base)
    assert webui.errors() == []


def test_ui_builds_caption_tab(webui):
    from modules import ui

    demo = webui.create_ui()
    assert webui.errors() == []
    tabs = [t for t in ui.tabs_built["interfaces"] if t[2] == "clipcap"]
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert title == "Caption"
    import gradio as gr

    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in wd.walk(demo)}
    assert {"tab_clipcap", "clipcap_image", "clipcap_caption", "clipcap_send_row"} <= ids


def test_send_to_buttons_use_the_host_plumbing(webui):
    from modules import infotext_utils

    webui.create_ui()
    caption, image = wd.find(webui.demo, "clipcap_caption"), wd.find(webui.demo, "clipcap_image")
    mine = [c for c in infotext_utils.connected if c["text"] is caption]
    assert sorted(c["tabname"] for c in mine) == ["extras", "img2img", "inpaint", "txt2img"]
    assert all(c["image"] is image for c in mine)
    row = wd.find(webui.demo, "clipcap_send_row")
    assert {c["button"] for c in mine} <= set(wd.walk(row))
    img2img = next(c for c in mine if c["tabname"] == "img2img")
    assert img2img["destination_image"] is not None  # paste_fields["img2img"]["init_img"]


def test_settings_section_matches_the_options_table(webui):
    from modules import shared

    from clipcap_webui import settings
    from lib_clipcap.options_table import OPTIONS

    webui.create_ui()
    keys = [k for k, v in shared.opts.data_labels.items() if k.startswith("clipcap_")]
    assert keys == settings.setting_keys()
    assert {f"clipcap_{o.key}" for o in OPTIONS} | set(settings.HOST_SETTINGS) == set(keys)
    for k in keys:
        info = shared.opts.data_labels[k]
        assert info.section == ("clipcap", "Caption (ClipCap)"), k
        assert k in shared.settings_components, k  # the Settings page built a component for it
    for o in OPTIONS:
        assert shared.opts.data_labels[o.settings_key].label == o.label
    shared.opts.dumpjson()
    assert getattr(shared.opts, "clipcap_insert_mode") == "replace"
    assert shared.opts.set("clipcap_insert_mode", "append") is True
    with pytest.raises(AttributeError):
        shared.opts.clipcap_no_such_setting


def test_settings_help_renders_as_written(webui):
    """The host puts each help text into the page as HTML: "empty: <models>/clipcap" showed as "empty: /clipcap"."""
    from html.parser import HTMLParser

    from modules import shared

    from clipcap_webui import settings
    from lib_clipcap.options_table import OPTIONS

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    webui.create_ui()
    helps = {o.settings_key: o.help for o in OPTIONS} | {k: v[4] for k, v in settings.HOST_SETTINGS.items()}
    for key, help_text in helps.items():
        page = Text()
        page.feed(shared.opts.data_labels[key].comment_after)
        page.close()
        assert "".join(page.parts) == f"({help_text})", key
    assert "<models>/clipcap" in helps[settings.MODELS_DIR]


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_button_sits_right_after_the_style_anchor(webui, tab):
    webui.create_ui()
    row = wd.find(webui.demo, f"{tab}_tools")
    # gradio 3 wraps the row's form components in an implicit gr.Form: compare in document order
    leaves = [b for b in wd.walk(row) if not getattr(b, "children", None)]
    ids = [getattr(c, "elem_id", None) for c in leaves]
    assert ids.index(f"{tab}_clipcap_button") == ids.index(f"{tab}_style_apply") + 1
    button = leaves[ids.index(f"{tab}_clipcap_button")]
    assert "tool" in button.elem_classes  # the host's ToolButton, not a custom subclass
    assert type(button).__name__ == "ToolButton"
    assert button.get_config()["elem_id"] == f"{tab}_clipcap_button"  # what the page gets (gradio 4: signature)
    style = leaves[ids.index(f"{tab}_clipcap_style")]  # the style choice right beside the button
    assert ids.index(f"{tab}_clipcap_style") == ids.index(f"{tab}_clipcap_button") + 1
    assert style.value == "Settings" and "Prompt: best" in str(style.get_config()["choices"])


def _button_event(webui, tab):
    button = wd.find(webui.demo, f"{tab}_clipcap_button")
    events = wd.click_events(webui.demo, button)  # in the root Blocks: the event reaches the served page
    assert len(events) == 1
    return events[0]


def test_txt2img_button_captions_the_selected_gallery_image(webui, fake_models):
    from modules import ui

    webui.create_ui()
    fake_models()
    event = _button_event(webui, "txt2img")
    assert event["js"] == "clipcapGalleryArgs"
    gallery, prompt = ui.tabs_built["txt2img_gallery"], ui.tabs_built["txt2img_prompt"]
    negative, style = wd.find(webui.demo, "txt2img_neg_prompt"), wd.find(webui.demo, "txt2img_clipcap_style")
    # the negative prompt box rides along (the prompt style may fill it; the sentence style leaves it as it is), and
    # the style choice goes in and comes back: the outputs are the inputs but the gallery (javascript/clipcap.js)
    assert event["inputs"] == [gallery, prompt, negative, style] and event["outputs"] == [prompt, negative, style]
    images = [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (32, 40), "blue")]
    assert wd.prompt_click(event, wd.gallery_value(gallery, images, 1), "old prompt", "neg") == ("a 32x40 picture",
                                                                                                 "neg")
    assert wd.prompt_click(event, wd.gallery_value(gallery, images, None), "", "") == ("a 64x48 picture", "")  # first


def test_txt2img_button_without_an_image_warns_and_keeps_the_prompt(webui, fake_models, monkeypatch, capsys):
    """An empty gallery is an ordinary user action: a warning toast, not gr.Error (a traceback in the console)."""
    import gradio as gr

    webui.create_ui()
    loader = fake_models()
    toasts = []
    monkeypatch.setattr(gr, "Warning", toasts.append)
    event = _button_event(webui, "txt2img")
    assert wd.prompt_click(event, [], "keep", "n") == ("keep", "n")
    assert wd.prompt_click(event, None, None, None) == ("", "")
    assert toasts == ["ClipCap: No image in the gallery: generate one first."] * 2
    assert "Traceback" not in capsys.readouterr().out
    assert loader.loaded == []  # no model was loaded for nothing


def test_prompt_button_joins_like_every_other_face():
    from clipcap_webui.prompt_button import merge_prompt

    assert merge_prompt("oil painting.", " a dog. ", "append") == "oil painting, a dog."
    assert merge_prompt("masterpiece,", "a dog.", "append") == "masterpiece, a dog."
    assert merge_prompt("", "a dog.", "append") == merge_prompt("old", "a dog.", "replace") == "a dog."


def test_gallery_file_outside_the_temp_folders_is_refused(webui, fake_models, tmp_path):
    import gradio as gr

    webui.create_ui()
    fake_models()
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    event = _button_event(webui, "txt2img")
    with pytest.raises(gr.Error, match="refused"):
        wd.prompt_click(event, [{"name": str(secret), "data": None, "is_file": True}], "", "")


def test_img2img_button_captions_the_init_image(webui, fake_models):
    from modules import infotext_utils, ui

    webui.create_ui()
    fake_models()
    event = _button_event(webui, "img2img")
    init = ui.tabs_built["init_img"]
    assert event["inputs"][0] is init is infotext_utils.paste_fields["img2img"]["init_img"]
    if webui.forge:  # ForgeCanvas: the background textbox carries a PNG data URL
        assert "logical_image_background" in init.elem_classes
        value = png_data_url(Image.new("RGBA", (40, 30), (0, 255, 0, 255)))
    else:  # gr.Image(type="pil", image_mode="RGBA")
        value = Image.new("RGBA", (40, 30))
    assert wd.prompt_click(event, value, "a prompt", "") == ("a 40x30 picture", "")


def test_insert_mode_append(webui, fake_models):
    from modules import shared

    webui.create_ui()
    fake_models()
    shared.opts.set("clipcap_insert_mode", "append")
    event = _button_event(webui, "img2img")
    value = Image.new("RGB", (10, 10)) if not webui.forge else png_data_url(Image.new("RGB", (10, 10)))
    assert wd.prompt_click(event, value, "masterpiece", "")[0] == "masterpiece, a 10x10 picture"
    assert wd.prompt_click(event, value, "masterpiece, ", "")[0] == "masterpiece, a 10x10 picture"
    assert wd.prompt_click(event, value, "", "")[0] == "a 10x10 picture"


def test_button_with_the_real_demo_model(mode, make_webui):
    """End to end on the bundled demo model: the prompt gets exactly what the library writes for the image."""
    from lib_clipcap import Captioner
    from lib_clipcap.registry import package_path

    webui = make_webui(mode, config={"clipcap_model": "shapes-demo", "clipcap_decoding": "greedy"})
    from modules import ui

    webui.create_ui()
    sample = Image.open(package_path("bundled:assets/samples/shapes_00.png")).convert("RGB")
    expected = Captioner.from_pretrained("shapes-demo", device="cpu").caption([sample], decoding="greedy",
                                                                              max_new_tokens=40)[0].text
    event = _button_event(webui, "txt2img")
    gallery = ui.tabs_built["txt2img_gallery"]
    assert wd.prompt_click(event, wd.gallery_value(gallery, [sample], 0), "", "") == (expected, "")
    assert webui.errors() == []


def test_reload_ui_keeps_one_set_of_callbacks_and_the_loaded_model(webui, fake_models):
    from lib_clipcap.app import service

    webui.create_ui()
    webui.start()
    loader = fake_models()
    manager = service.default_manager()
    img2img = _button_event(webui, "img2img")
    value = Image.new("RGB", (9, 9)) if not webui.forge else png_data_url(Image.new("RGB", (9, 9)))
    wd.prompt_click(img2img, value, "", "")
    assert len(loader.loaded) == 1

    webui.reload_ui()
    webui.start()
    for category in CATEGORIES:
        assert len(webui.callbacks(category)) == 1, category
    assert service.default_manager() is manager
    wd.prompt_click(_button_event(webui, "img2img"), value, "", "")  # the new UI's button uses the same model
    assert len(loader.loaded) == 1 and not loader.loaded[0].unloaded
    assert webui.errors() == []


def test_unloaded_extension_frees_its_models(webui, fake_models, monkeypatch):
    from modules import script_callbacks

    from clipcap_webui import models

    webui.create_ui()
    loader = fake_models()
    models.get_manager().get("shapes-demo")
    monkeypatch.setattr(models, "UNLOAD_GRACE_S", 0.05)
    script_callbacks.script_unloaded_callback()  # extension disabled: nothing re-imports the script
    deadline = time.monotonic() + 5
    while not loader.loaded[0].unloaded and time.monotonic() < deadline:
        time.sleep(0.02)
    assert loader.loaded[0].unloaded


def test_callback_errors_do_not_leak_and_nowebui_builds_no_page(mode, make_webui, fake_models):
    """--nowebui: on_ui_settings/on_ui_tabs still run (the Api builds the UI), then on_app_started(None, app)."""
    webui = make_webui(mode, argv=["--nowebui"])
    webui.create_ui()
    fake_models()
    app = webui.start(demo=None)
    from fastapi.testclient import TestClient

    assert TestClient(app, base_url="http://127.0.0.1:7860").get("/clipcap/v1/models").status_code == 200
    assert webui.errors() == []
