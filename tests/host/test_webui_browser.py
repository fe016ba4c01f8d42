"""The prompt-from-image button in a real browser, in the host double's page (gradio 3.41 as A1111, 4.40 as Forge).

Generates (the double's fake "Generate" shows two bundled sample images in the txt2img gallery), selects an image in
the gallery, clicks the 💬 button and checks that the prompt holds the demo model's caption of the *selected* image:
this exercises javascript/clipcap.js against each gradio's gallery DOM. Keeps artifacts/screenshots/host-<mode>.png.
Runs where gradio 3 or 4 is installed (tools/host_envs.sh's venvs); skips without /usr/bin/chromium or playwright.
"""

from __future__ import annotations

import json

import pytest
from _browser import ROOT, SHOTS, launch_chromium
from _host_browser import require_host_browser, serve_double

SAMPLES = [ROOT / "lib_clipcap" / "assets" / "samples" / n for n in ("shapes_00.png", "shapes_01.jpg")]

sync_api, MODE = require_host_browser()


@pytest.fixture(scope="module")
def expected():
    from PIL import Image

    from lib_clipcap import Captioner
    from lib_clipcap.options_table import caption_kwargs, defaults

    kw = caption_kwargs({k: v for k, v in {**defaults(), "decoding": "greedy"}.items() if k != "model"})
    images = [Image.open(p).convert("RGB") for p in SAMPLES]
    return [r.text for r in Captioner.from_pretrained("shapes-demo", device="cpu").caption(images, **kw)]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    with serve_double(MODE, tmp_path_factory.mktemp("webui"), SAMPLES) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p, "--disable-gpu", "--disable-background-networking", "--disable-component-update")
        yield b
        b.close()


def prompt_value(page) -> str:
    return page.locator("#txt2img_prompt textarea").input_value()


@pytest.mark.slow
def test_button_captions_the_selected_gallery_image(page_url, browser, expected):
    assert expected[0] != expected[1]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(page_url)
    assert page.evaluate("typeof clipcapGalleryArgs") == "function"  # the extension's JS reached the page
    page.locator("#txt2img_generate").click()
    thumbs = page.locator("#txt2img_gallery .thumbnail-item")
    thumbs.nth(1).wait_for(state="visible")
    page.locator("#txt2img_gallery .thumbnail-item").nth(1).click()  # opens/selects the second image
    page.wait_for_function("() => clipcapGallerySelectedIndex('txt2img') === 1")

    page.locator("#txt2img_clipcap_button").click()
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.length > 0")
    assert prompt_value(page) == expected[1]

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"host-{MODE}.png"), full_page=True)

    small = page.locator("#txt2img_gallery .thumbnail-item.thumbnail-small")
    small.nth(0).click()  # select the first in the preview strip
    page.wait_for_function("() => clipcapGallerySelectedIndex('txt2img') === 0")
    page.locator("#txt2img_clipcap_button").click()
    page.wait_for_function(f"() => document.querySelector('#txt2img_prompt textarea').value === {json.dumps(expected[0])}")
    title = page.locator("#txt2img_clipcap_button").get_attribute("title")
    assert title and "ClipCap" in title
    page.close()


@pytest.mark.slow
def test_style_choice_beside_the_button_writes_the_best_prompt(page_url, browser):
    """The dropdown beside the button (``txt2img_clipcap_style``) picks the prompt style for the click, whatever the
    setting (sentence here): "Prompt: best" writes the library's best-mode prompt of the selected image."""
    from PIL import Image

    from lib_clipcap import Captioner
    from lib_clipcap.options_table import caption_kwargs, defaults
    from lib_clipcap.tags import make_prompt

    kw = caption_kwargs({k: v for k, v in {**defaults(), "decoding": "greedy"}.items() if k != "model"})
    want = make_prompt(Captioner.from_pretrained("shapes-demo", device="cpu"), Image.open(SAMPLES[0]).convert("RGB"),
                       "best", decoding=kw, cache=None)
    assert want.modifiers and want.text != want.caption
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(page_url)
    style = page.locator("#txt2img_clipcap_style")
    style.wait_for(state="visible")
    # in the tools row, right after the button (the double has none of the host's CSS, so no geometry is checked)
    assert page.locator("#txt2img_tools #txt2img_clipcap_style").count() == 1
    assert page.evaluate("""() => {
        const b = document.querySelector('#txt2img_clipcap_button'), s = document.querySelector('#txt2img_clipcap_style');
        return !!(b.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")
    page.locator("#txt2img_generate").click()
    page.locator("#txt2img_gallery .thumbnail-item").nth(1).wait_for(state="visible")
    style.locator("input").click()
    page.locator("ul.options li", has_text="Prompt: best").first.click()  # gradio 3.41 and 4.40 alike
    page.locator("#txt2img_clipcap_button").click()  # no image selected: the first
    page.wait_for_function(f"() => document.querySelector('#txt2img_prompt textarea').value === {json.dumps(want.text)}")
    assert style.locator("input").input_value() == "Prompt: best"  # the choice stays after the click
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"host-{MODE}-style.png"), full_page=False)
    page.close()
