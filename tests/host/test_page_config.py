"""The ClipCap controls as the page sees them, and generations driven with what the page sends.

The browser knows a component only through the Blocks config served at ``/config`` (its ``choices`` and ``value``);
it shows each choice's label and sends its value back, and the server runs the event's preprocess -> function
(tests/host/_page_config.py). Reading the Python components instead hides what a gradio version does to them:
gradio 3.41 (A1111 v1.10.1) stores ``str(choice)`` for every ``Dropdown`` choice, so ``(label, value)`` pairs turned
into choices like ``"('shapes-demo', 'shapes-demo')"``, which the handlers then got as the model name (issue 23).
So on each pinned gradio (tools/test.sh runs this folder under A1111's, Forge's and the main venv's) these tests read
the config, pick a choice by the label the page shows, and run a generation, an img2img batch, the Extras step and
the prompt button with the value the page sends for it, through ``POST /run/predict``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import _page_config as pc
import webui_double as wd

TITLE = "ClipCap"
MODEL_DROPDOWNS = ("script_txt2img_clipcap_model", "script_img2img_clipcap_model", "extras_clipcap_model")


@pytest.fixture
def models(fake_models):
    """The fake captioners behind the manager, refusing names the registry does not know (as the real loader does:
    ``UnknownModelError``), so a value the page sends that is no model name fails here too."""
    from lib_clipcap.app import service
    from lib_clipcap.registry import get_model

    from clipcap_webui import host, memory

    loader = fake_models()
    service.reset_default_manager()
    service.default_manager(models_dir=host.models_dir(), policy=memory.make_policy(), max_loaded=1,
                            loader=lambda name: loader(get_model(name).name))
    return loader


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "one.png")
    Image.new("RGB", (20, 10), "blue").save(folder / "two.jpg")
    return folder


def _no_clipcap_trouble(webui, text: str) -> None:
    assert "ClipCap:" not in (text or ""), text  # the results panel's failure and fallback lines
    assert webui.errors() == []


# ------------------------------------------------------------------------------------------------- the config
def test_choices_are_what_the_page_can_show(webui):
    """Every ClipCap choice component: strings or [label, value] pairs, no label that reads like a Python tuple,
    and a value that is one of the choices; the model dropdowns show "Settings default" and the registry's names."""
    from lib_clipcap.registry import list_models

    webui.create_ui()
    page = pc.Page(webui.demo)
    found = page.choice_components("clipcap")
    for elem_id in (*MODEL_DROPDOWNS, "setting_clipcap_model", "script_txt2img_clipcap_preset",
                    "script_txt2img_clipcap_outputs", "script_img2img_clipcap_prompt_mode", "extras_clipcap_preset"):
        assert elem_id in found
    problems = [p for elem_id in found for p in page.problems(elem_id)]
    assert problems == []
    for elem_id in MODEL_DROPDOWNS:
        shown = page.choices(elem_id)
        assert [label for label, _ in shown] == ["Settings default", *list_models()], elem_id
        default = page.props(elem_id)["value"]
        assert [label for label, value in shown if value == default] == ["Settings default"], elem_id
        assert all(value == label for label, value in shown[1:]), elem_id  # a model's value is its name


# ---------------------------------------------------------------------------------------- driven as the page
@pytest.mark.parametrize("label, loaded", [("Settings default", "shapes-demo"), ("shapes-sbg", "shapes-sbg")])
def test_txt2img_generation_with_the_model_the_page_sends(webui, models, tmp_path, label, loaded):
    from modules import processing, scripts
    from modules import ui as host_ui

    out = tmp_path / "out"
    out.mkdir()
    webui.create_ui()

    def generate(prompt, *script_values):  # the host's txt2img button: the prompt and every script control
        processed = processing.txt2img(prompt, 0, *script_values, outpath=str(out), width=64, height=48)
        return processed.comments or ""

    pc.add_event(webui.demo, wd.find(webui.demo, "txt2img_generate"), generate,
                 [host_ui.tabs_built["txt2img_prompt"], *scripts.scripts_txt2img.inputs[1:]],
                 [wd.find(webui.demo, "generation_info_txt2img")], "page_txt2img")
    page = pc.Page(webui.demo)
    fn = page.fn_index(api_name="page_txt2img")
    model = "script_txt2img_clipcap_model"
    data = page.inputs(fn, **{
        "txt2img_prompt": "a castle",
        "script_txt2img_clipcap_enabled-checkbox": True,
        model: page.value_of(model, label),
        "script_txt2img_clipcap_preset": page.value_of("script_txt2img_clipcap_preset", "Fast (greedy)"),
        "script_txt2img_clipcap_outputs": [page.value_of("script_txt2img_clipcap_outputs", "Sidecar file")],
    })
    (comments,) = page.run(fn, data)
    (image,) = sorted(out.glob("*.png"))
    assert image.with_suffix(".txt").read_text(encoding="utf-8") == "a 64x48 picture"
    assert [m.name for m in models.loaded] == [loaded]
    assert models.loaded[0].calls[0]["kwargs"]["decoding"] == "greedy"  # the preset the page sent
    _no_clipcap_trouble(webui, comments)


def test_img2img_batch_caption_as_prompt_with_the_model_the_page_sends(webui, models, tmp_path):
    from modules import img2img, infotext_utils, scripts
    from modules import ui as host_ui

    folder = _inputs(tmp_path / "in")
    webui.create_ui()

    def generate(prompt, *script_values):
        processed = img2img.img2img(prompt, 0, *script_values, batch_source="from dir", batch_input=str(folder),
                                    outpath=str(tmp_path / "out"), width=32, height=32)
        prompts = [infotext_utils.parse_generation_parameters(t)["Prompt"] for t in processed.infotexts]
        return "\n".join(prompts + [processed.comments or ""])

    pc.add_event(webui.demo, wd.find(webui.demo, "img2img_generate"), generate,
                 [host_ui.tabs_built["img2img_prompt"], *scripts.scripts_img2img.inputs[1:]],
                 [wd.find(webui.demo, "generation_info_img2img")], "page_img2img")
    page = pc.Page(webui.demo)
    fn = page.fn_index(api_name="page_img2img")
    model = "script_img2img_clipcap_model"
    data = page.inputs(fn, **{
        "img2img_prompt": "masterpiece",
        "script_img2img_clipcap_enabled-checkbox": True,
        model: page.value_of(model, "shapes-demo"),
        "script_img2img_clipcap_outputs": [],
        "script_img2img_clipcap_prompt_mode": page.value_of("script_img2img_clipcap_prompt_mode",
                                                            "Prompt, then caption"),
    })
    (text,) = page.run(fn, data)
    lines = text.split("\n")
    assert lines[:2] == ["masterpiece, a 40x30 picture", "masterpiece, a 20x10 picture"]
    assert [m.name for m in models.loaded] == ["shapes-demo"]
    _no_clipcap_trouble(webui, "\n".join(lines[2:]))


@pytest.mark.parametrize("label, loaded", [("Settings default", "shapes-demo"), ("shapes-sbg", "shapes-sbg")])
def test_extras_step_with_the_model_the_page_sends(webui, models, tmp_path, label, loaded):
    import gradio as gr
    from modules import postprocessing
    from modules import ui as host_ui

    folder, out = _inputs(tmp_path / "in"), tmp_path / "out"
    webui.create_ui()

    def run(*script_values):  # the host's Extras button, batch from a folder (the double has no button of its own)
        postprocessing.run_postprocessing(2, None, None, str(folder), str(out), True, *script_values)
        return "done"

    with webui.demo:
        button = gr.Button("Generate", elem_id="page_extras_generate", visible=False)
        status = gr.Textbox(visible=False, elem_id="page_extras_status")
    pc.add_event(webui.demo, button, run, host_ui.tabs_built["extras_script_inputs"], [status], "page_extras")
    page = pc.Page(webui.demo)
    fn = page.fn_index(api_name="page_extras")
    data = page.inputs(fn, **{"extras_clipcap-checkbox": True,
                              "extras_clipcap_model": page.value_of("extras_clipcap_model", label)})
    assert page.run(fn, data) == ["done"]
    assert (out / "one.txt").read_text(encoding="utf-8") == "a 40x30 picture"
    assert (out / "two.txt").read_text(encoding="utf-8") == "a 20x10 picture"
    assert {m.name for m in models.loaded} == {loaded}
    assert webui.errors() == []


def test_prompt_button_with_the_model_setting_the_page_sends(webui, models):
    """Settings: the model picked in the page's dropdown; txt2img: Generate fills the gallery, the prompt button
    captions the gallery's image (as ``clipcapGalleryArgs`` leaves it) into the prompt."""
    from modules import shared
    from modules import ui as host_ui

    webui.create_ui()
    host_ui.fake_outputs[:] = [Image.new("RGB", (64, 48), "green"), Image.new("RGB", (30, 20), "red")]
    page = pc.Page(webui.demo)
    shared.opts.set("clipcap_model", page.value_of("setting_clipcap_model", "shapes-sbg"))  # Apply settings
    (gallery,) = page.run(page.fn_index(target="txt2img_generate"), [])
    button = page.fn_index(target="txt2img_clipcap_button")
    assert page.dependency(button)["js"] == "clipcapGalleryArgs"
    # the JS kept the selected image, the second; the negative prompt box rides along unchanged (sentence style)
    prompt, negative, style = page.run(button, [[gallery[1]], "typed", "typed negative",
                                               page.value_of("txt2img_clipcap_style", "Settings")])
    assert (prompt, negative, style) == ("a 30x20 picture", "typed negative", "Settings")
    assert [m.name for m in models.loaded] == ["shapes-sbg"]
    assert webui.errors() == []
