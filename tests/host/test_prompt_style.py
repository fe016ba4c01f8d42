"""The prompt style of the txt2img/img2img prompt button (issue 22) in the WebUI double, with the bundled demo model:
``clipcap_prompt_style`` fast/best writes the library's prompt into the prompt box, and ``clipcap_prompt_negative``
its negative suggestion into the negative prompt box (replacing it, or appended without repeating a term)."""

from __future__ import annotations

import pytest
from PIL import Image

import webui_double as wd

DEMO = "shapes-demo"


@pytest.fixture(scope="module")
def sample():
    from lib_clipcap.registry import package_path

    return Image.open(package_path("bundled:assets/samples/shapes_00.png")).convert("RGB")


def expected_prompt(sample, style: str, max_tokens: int = 75):
    from lib_clipcap import Captioner
    from lib_clipcap.options_table import caption_kwargs, defaults
    from lib_clipcap.tags import make_prompt

    kw = caption_kwargs({k: v for k, v in {**defaults(), "decoding": "greedy"}.items() if k != "model"})
    return make_prompt(Captioner.from_pretrained(DEMO, device="cpu"), sample, style, decoding=kw, cache=None,
                       max_tokens=max_tokens)


def _event(webui, tab: str) -> dict:
    (event,) = wd.click_events(webui.demo, wd.find(webui.demo, f"{tab}_clipcap_button"))
    return event


def test_settings_offer_the_prompt_style_and_the_negative_switch(webui):
    from modules import shared

    from clipcap_webui import settings

    webui.create_ui()
    style = shared.opts.data_labels["clipcap_prompt_style"]
    assert style.default == "sentence"
    args = style.component_args() if callable(style.component_args) else style.component_args
    assert list(args["choices"]) == ["sentence", "fast", "best"]
    assert shared.opts.data_labels[settings.PROMPT_NEGATIVE].default is False
    assert settings.prompt_negative() is False


@pytest.mark.parametrize("style", ["fast", "best"])
def test_the_button_writes_the_librarys_prompt_and_negative(mode, make_webui, sample, style):
    webui = make_webui(mode, config={"clipcap_model": DEMO, "clipcap_decoding": "greedy",
                                     "clipcap_prompt_style": style, "clipcap_prompt_negative": True})
    from modules import ui

    webui.create_ui()
    want = expected_prompt(sample, style)
    assert want.modifiers and want.negative
    event = _event(webui, "txt2img")
    gallery = ui.tabs_built["txt2img_gallery"]
    prompt, negative = wd.prompt_click(event, wd.gallery_value(gallery, [sample], 0), "old", "old negative")
    assert (prompt, negative) == (want.text, want.negative)
    assert webui.errors() == []


def test_append_mode_adds_only_the_missing_negative_terms(mode, make_webui, sample):
    webui = make_webui(mode, config={"clipcap_model": DEMO, "clipcap_decoding": "greedy",
                                     "clipcap_prompt_style": "fast", "clipcap_prompt_negative": True,
                                     "clipcap_insert_mode": "append"})
    from modules import shared

    webui.create_ui()
    want = expected_prompt(sample, "fast")
    first = want.negative.split(", ")[0]
    event = _event(webui, "img2img")
    value = sample if not webui.forge else _data_url(sample)
    prompt, negative = wd.prompt_click(event, value, "masterpiece", f"nsfw, {first}")
    assert prompt == f"masterpiece, {want.text}"
    assert negative == ", ".join(["nsfw", first, *want.negative.split(", ")[1:]])
    again = wd.prompt_click(event, value, prompt, negative)[1]
    assert again == negative  # a second click repeats no term
    shared.opts.set("clipcap_prompt_negative", False)  # the switch off: the negative prompt stays as typed
    assert wd.prompt_click(event, value, "", "typed")[1] == "typed"


def test_the_prompt_budget_setting_reaches_the_prompt(mode, make_webui, sample):
    from lib_clipcap.tags.prompt import count_tokens

    webui = make_webui(mode, config={"clipcap_model": DEMO, "clipcap_decoding": "greedy",
                                     "clipcap_prompt_style": "best", "clipcap_prompt_max_tokens": 14})
    from modules import ui

    webui.create_ui()
    want = expected_prompt(sample, "best", max_tokens=14)
    event = _event(webui, "txt2img")
    prompt, negative = wd.prompt_click(event, wd.gallery_value(ui.tabs_built["txt2img_gallery"], [sample], 0), "", "n")
    assert prompt == want.text and negative == "n"  # clipcap_prompt_negative is off by default
    from lib_clipcap import Captioner

    assert count_tokens(Captioner.from_pretrained(DEMO, device="cpu").clip, [prompt])[0] <= max(
        14, count_tokens(Captioner.from_pretrained(DEMO, device="cpu").clip, [want.caption])[0])


def _data_url(image) -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(("setting", "choice", "style"), [("sentence", "Prompt: best", "best"),
                                                          ("best", "Sentence", "sentence"),
                                                          ("fast", "Settings", "fast")])
def test_the_style_choice_beside_the_button_overrides_the_setting(mode, make_webui, sample, setting, choice, style):
    webui = make_webui(mode, config={"clipcap_model": DEMO, "clipcap_decoding": "greedy",
                                     "clipcap_prompt_style": setting})
    from modules import ui

    webui.create_ui()
    event = _event(webui, "txt2img")
    gallery = wd.gallery_value(ui.tabs_built["txt2img_gallery"], [sample], 0)
    prompt, _ = wd.prompt_click(event, gallery, "", "", style=choice)
    want = expected_prompt(sample, "fast" if style == "fast" else "best")
    assert prompt == (want.caption if style == "sentence" else want.text)
    assert webui.errors() == []


def test_a_stored_unknown_style_choice_means_the_setting():
    from clipcap_webui.prompt_button import STYLE_CHOICES, style_from_control

    assert style_from_control("Settings") is None and style_from_control(None) is None
    assert style_from_control("Prompt (best), an older label") is None  # e.g. from an older ui-config.json
    assert [style_from_control(k) for k in STYLE_CHOICES] == [None, "sentence", "fast", "best"]
    assert style_from_control("best") == "best"  # the style names themselves (scripts, API callers)
