"""Captioning inside generation, in the WebUI double: the "Caption generated images" section of txt2img/img2img.

A generation here is the host's own ``process_images`` order (hooks, ``images.save_image`` firing the image-saved
callbacks, infotexts, grid, ``postprocess``), run the way the Generate button runs it (under ``queue_lock``; on Forge
on its main thread while the caller holds the lock). Files are read back the way a user would: the sidecar's text, and
the metadata with Pillow (PNG text chunk, EXIF UserComment) and with the host's own ``read_info_from_image`` and
``parse_generation_parameters`` (PNG Info).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import types
from pathlib import Path

import pytest
from PIL import Image

import webui_double as wd

TITLE = "ClipCap"
CAPTION_KEY = "ClipCap caption"


def section(enabled=True, model="shapes-demo", preset="fast", outputs=("sidecar", "metadata"), ext=".txt",
            existing="skip", prefix="", suffix="", prompt_mode="off", content="caption") -> list:
    return [enabled, model, preset, list(outputs), ext, existing, prefix, suffix, prompt_mode, content]


def txt2img(out: Path, values: list, **kwargs):
    from modules import processing, scripts

    args = wd.script_args(scripts.scripts_txt2img, TITLE, values)
    kwargs = {"width": 64, "height": 48, **kwargs}
    return processing.txt2img("a castle on a hill", *args, outpath=str(out), **kwargs)


def images_in(folder: Path, ext: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == f".{ext}")


def exif_comment(path: Path) -> str:
    """The EXIF UserComment as a user's tool reads it (Pillow), decoded as the WebUI writes it (UNICODE, UTF-16BE)."""
    with Image.open(path) as im:
        raw = im.getexif().get_ifd(0x8769)[0x9286]
    raw = bytes(raw) if isinstance(raw, tuple) else raw
    assert raw.startswith(b"UNICODE\x00")
    return raw[8:].decode("utf-16-be")


def png_info(path: Path) -> str:
    """What the host's PNG Info tab shows as the parameters of a file."""
    from modules import images

    with Image.open(path) as im:
        im.load()
        return images.read_info_from_image(im)[0]


@pytest.fixture
def out(tmp_path) -> Path:
    """Where generated images go (tmp_path also holds the fake webui folder)."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


@pytest.fixture
def ui(webui, fake_models):
    webui.create_ui()
    return fake_models()


# ------------------------------------------------------------------------------------------------------------- UI
def test_section_builds_in_both_tabs(webui):
    import gradio as gr
    from modules import infotext_utils, scripts

    from clipcap_webui.generation_ui import model_from_control

    webui.create_ui()
    assert webui.errors() == []
    for tab, runner in (("txt2img", scripts.scripts_txt2img), ("img2img", scripts.scripts_img2img)):
        script = runner.script(TITLE)
        assert script is not None and script.alwayson, tab
        controls = runner.inputs[script.args_from:script.args_to]
        assert len(controls) == 10
        enabled, model, preset, outputs, ext, existing, prefix, suffix, prompt_mode, content = controls
        assert content.value == "caption"
        assert isinstance(enabled, gr.Checkbox) and enabled.value is False  # the host's InputAccordion
        # "Settings default": the setting as it is when the generation runs ("" where Dropdown takes (label, value)
        # pairs, the label itself before gradio 3.44: test_page_config.py reads it as the page does)
        assert model.value in ("", "Settings default") and model_from_control(model.value) == ""
        assert outputs.value == ["sidecar", "metadata"] and existing.value == "skip" and ext.value == ".txt"
        assert prompt_mode.visible is (tab == "img2img")
        ids = {getattr(b, "elem_id", None) for b in wd.walk(webui.demo)}
        assert f"script_{tab}_clipcap_enabled" in ids and f"script_{tab}_clipcap_outputs" in ids
        pasted = [f[0] for f in infotext_utils.paste_fields[tab]["fields"]]
        assert set(controls) <= set(pasted)  # the host's paste buttons restore the section


def test_disabled_section_changes_nothing(webui, ui, out):
    processed = txt2img(out, section(enabled=False), batch_size=2)
    assert [p.suffix for p in out.iterdir()] == [".png", ".png"]
    assert "ClipCap" not in processed.infotexts[1]
    assert ui.loaded == [] and webui.errors() == []


# --------------------------------------------------------------------------------------------- files and metadata
@pytest.mark.parametrize("fmt", ["png", pytest.param("jpg", marks=pytest.mark.slow),
                                 pytest.param("webp", marks=pytest.mark.slow)])
def test_generation_writes_sidecar_and_metadata(webui, ui, out, fmt):
    from modules import infotext_utils, shared

    shared.opts.set("samples_format", fmt)
    processed = txt2img(out, section(prefix="sks"), batch_size=2, n_iter=2, width=64, height=48)
    files = images_in(out, fmt)
    assert len(files) == 4  # the images are saved, each with its sidecar
    for f in files:
        assert f.with_suffix(".txt").read_text(encoding="utf-8") == "sks, a 64x48 picture"
        text = png_info(f)  # PNG Info: the host's reader
        if fmt == "png":
            with Image.open(f) as im:
                im.load()
                assert im.info["parameters"] == text
        else:
            assert exif_comment(f) == text
        params = infotext_utils.parse_generation_parameters(text)
        assert params[CAPTION_KEY] == "a 64x48 picture"
        assert params["Prompt"] == "a castle on a hill" and params["Steps"] == "20"  # the host's entries are intact
        assert params["ClipCap model"] == "shapes-demo" and params["ClipCap preset"] == "fast"
    # one model call per batch of 2, inside the generation's queue lock (no deadlock: inside_generation)
    calls = ui.loaded[0].calls
    assert [c["sizes"] for c in calls] == [[(64, 48)] * 2] * 2
    assert all(c["queue_locked"] for c in calls)
    assert calls[0]["kwargs"]["decoding"] == "greedy"  # the "fast" preset
    # the results: infotexts (the gallery's and the API's), the images' own info, and the API's list
    assert processed.index_of_first_image == 1  # the grid comes first and has no caption
    assert CAPTION_KEY not in processed.infotexts[0]
    for text, image in zip(processed.infotexts[1:], processed.images[1:]):
        assert infotext_utils.parse_generation_parameters(text)[CAPTION_KEY] == "a 64x48 picture"
        assert image.info["parameters"] == text
    info = json.loads(processed.js())
    assert info["extra_generation_params"]["ClipCap captions"] == [None] + ["a 64x48 picture"] * 4
    grids = [p for p in Path(shared.opts.outdir_txt2img_grids).iterdir()]
    assert grids and not [g for g in grids if g.suffix == ".txt"]  # the grid is not captioned
    assert webui.errors() == []


def test_lossless_webp(webui, ui, out):
    from modules import shared

    shared.opts.set("samples_format", "webp")
    shared.opts.set("webp_lossless", True)
    txt2img(out, section(outputs=["metadata"]), width=32, height=32)
    (f,) = images_in(out, "webp")
    assert exif_comment(f).endswith("ClipCap caption: a 32x32 picture")
    with Image.open(f) as im:
        im.load()
        assert im.size == (32, 32)


def test_existing_sidecar_policy_and_the_hosts_own_txt(webui, ui, out):
    """The host's "save_txt" writes <image>.txt (the infotext) before our callback: 'skip' keeps it and says so;
    'append' adds the caption after it, as batch tagging does."""
    from modules import shared

    shared.opts.set("save_txt", True)
    processed = txt2img(out, section(outputs=["sidecar"]))
    (f,) = images_in(out, "png")
    assert f.with_suffix(".txt").read_text(encoding="utf-8").startswith("a castle on a hill\n")
    assert "already existed and was kept" in processed.comments

    processed = txt2img(out, section(outputs=["sidecar"], existing="append", suffix="trigger"))
    f = images_in(out, "png")[-1]
    text = f.with_suffix(".txt").read_text(encoding="utf-8")
    assert text.startswith("a castle on a hill") and text.endswith(", a 64x48 picture, trigger")

    processed = txt2img(out, section(outputs=["sidecar"], ext=".caption"))
    f = images_in(out, "png")[-1]
    assert f.with_suffix(".caption").read_text(encoding="utf-8") == "a 64x48 picture"
    assert webui.errors() == []


def test_results_panel_and_unsaved_images(webui, ui, out):
    """Images the host does not save (samples_save off; API calls without save_images) still get their captions in
    the returned infotexts and the results panel."""
    from modules import shared

    shared.opts.set("samples_save", False)
    processed = txt2img(out, section(outputs=["metadata", "panel"]), batch_size=2)
    assert not list(out.iterdir())
    assert "ClipCap caption 1: a 64x48 picture\nClipCap caption 2: a 64x48 picture\n" in processed.comments
    assert all(CAPTION_KEY in t for t in processed.infotexts[1:])


# --------------------------------------------------------------------------------------------------------- errors
class BrokenCaptioner:
    def __init__(self):
        import torch

        self.model = torch.nn.Linear(2, 2)
        self.calls = 0

    def to(self, *a, **k):
        return self

    def caption(self, images, **kwargs):
        self.calls += 1
        raise RuntimeError("CUDA out of memory (simulated)")

    def unload(self):
        pass


def test_failure_inside_captioning_still_saves_the_images(webui, out):
    from lib_clipcap.app import service

    from clipcap_webui import host, memory

    webui.create_ui()
    broken = BrokenCaptioner()
    service.reset_default_manager()
    service.default_manager(models_dir=host.models_dir(), policy=memory.make_policy(), loader=lambda name: broken)
    processed = txt2img(out, section(outputs=["sidecar", "metadata", "panel"]), batch_size=2, n_iter=3)
    files = images_in(out, "png")
    assert len(files) == 6  # every image saved
    assert not [p for p in out.iterdir() if p.suffix == ".txt"]
    assert all(CAPTION_KEY not in png_info(f) for f in files)
    assert broken.calls == 1  # tried once, then left alone for the rest of the generation
    reports = [r for r in webui.errors() if "[ClipCap]" in r]
    assert len(reports) == 1 and "CUDA out of memory" in reports[0]  # logged once
    assert processed.comments.count("ClipCap: captioning failed") == 1  # shown once
    assert len(processed.images) == 7


def test_unknown_model_is_reported_not_raised(webui, ui, out):
    from clipcap_webui import models
    from lib_clipcap.app import service

    service.reset_default_manager()
    models.get_manager()  # the real loader: an unknown name fails in the registry
    processed = txt2img(out, section(model="no-such-model"))
    assert len(images_in(out, "png")) == 1
    assert "no-such-model" in processed.comments
    assert len([r for r in webui.errors() if "[ClipCap]" in r]) == 1


def test_bad_arguments_fall_back_to_defaults(webui, ui, out, capsys):
    processed = txt2img(out, section(preset="turbo", ext=".png", existing="merge"))
    (f,) = images_in(out, "png")
    assert f.with_suffix(".txt").read_text(encoding="utf-8") == "a 64x48 picture"  # defaults: .txt, skip, settings
    assert "ClipCap: ignored invalid settings" in processed.comments and "turbo" in processed.comments
    console = capsys.readouterr().out
    assert "[ClipCap] ignored invalid settings" in console and "ClipCap: ignored" not in console  # one prefix
    assert webui.errors() == []


# ------------------------------------------------------------------------------------------- GPU etiquette, locks
def test_forge_runs_hooks_on_its_main_thread_without_deadlock(mode, make_webui, fake_models, out):
    """The caption call happens while the host holds queue_lock (in Forge, held by another thread than the one
    running the hooks): it must neither wait for the lock nor skip the host's memory management."""
    webui = make_webui(mode)
    webui.create_ui()
    loader = fake_models()
    done = threading.Event()
    result = {}

    def run():
        result["processed"] = txt2img(out, section())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(120), "generation did not finish: the caption call waited for the host's queue lock"
    assert loader.loaded[0].calls[0]["queue_locked"]
    if webui.forge:
        from modules._mode import memory_management  # backend's (Forge, Neo) or ldm_patched's (Classic)

        assert [c for c in memory_management().calls if c[0] == "load_models_gpu"]  # Forge's manager loaded it
    else:
        assert any(str(dev) == "cpu" for dev, _ in loader.loaded[0].moves)  # A1111: moved to the run device


# ---------------------------------------------------------------------------------------- infotext and the API
def test_infotext_round_trip_through_paste(webui, ui, out):
    from modules import scripts

    values = section(preset="best", outputs=["sidecar", "panel"], ext=".caption", existing="append", prefix="sks",
                     suffix="photo, 35mm")
    txt2img(out, values)
    (f,) = images_in(out, "png")
    pasted = wd.paste("txt2img", png_info(f))  # PNG Info -> "Send to txt2img"
    script = scripts.scripts_txt2img.script(TITLE)
    controls = scripts.scripts_txt2img.inputs[script.args_from:script.args_to]
    assert [pasted.get(c) for c in controls] == values
    # an infotext without ClipCap entries switches the section off and leaves the rest alone
    pasted = wd.paste("txt2img", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
    assert pasted[controls[0]] is False and all(c not in pasted for c in controls[1:])


def test_img2img_infotext_restores_the_prompt_mode(webui, ui):
    from modules import scripts

    text = ("a photo\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, ClipCap model: shapes-demo, "
            "ClipCap preset: varied, ClipCap output: metadata, ClipCap prompt: prepend")
    pasted = wd.paste("img2img", text)
    script = scripts.scripts_img2img.script(TITLE)
    controls = scripts.scripts_img2img.inputs[script.args_from:script.args_to]
    assert [pasted.get(c) for c in controls] == section(preset="varied", outputs=["metadata"], prompt_mode="prepend")


def _b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def api(mode, make_webui, fake_models):
    from fastapi.testclient import TestClient

    webui = make_webui(mode, argv=["--api"])
    webui.create_ui()
    loader = fake_models()
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    client.webui, client.loader = webui, loader
    return client


def test_api_alwayson_scripts_args(api):
    """``alwayson_scripts`` positional args (the others keep the section's defaults) and the one-dict form."""
    body = {"prompt": "a red ball", "width": 40, "height": 30, "batch_size": 2,
            "alwayson_scripts": {"ClipCap": {"args": [True, "shapes-demo", "fast", ["metadata"]]}}}
    r = api.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert info["extra_generation_params"]["ClipCap captions"][-2:] == ["a 40x30 picture"] * 2
    assert all("ClipCap caption: a 40x30 picture" in t for t in info["infotexts"][-2:])
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][-1])))
    assert "ClipCap caption: a 40x30 picture" in image.info["parameters"]  # the returned PNG carries it

    body["alwayson_scripts"] = {"clipcap": {"args": [{"enabled": True, "outputs": ["panel"], "preset": "best"}]}}
    info = json.loads(api.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert info["extra_generation_params"]["ClipCap preset"] == "best"
    assert "ClipCap caption" not in info["infotexts"][-1]  # metadata not asked for
    assert api.loader.loaded[0].calls[-1]["kwargs"]["decoding"] == "beam"
    assert api.webui.errors() == []


def test_api_short_positional_args_follow_a_changed_model_setting(api):
    """The host caches the section's default args at the first API call; the model default must not be a name frozen
    then: after POST /sdapi/v1/options {"clipcap_model": ...}, ``"args": [true]`` uses the new setting."""
    from modules import shared

    body = {"prompt": "a red ball", "width": 24, "height": 24,
            "alwayson_scripts": {"ClipCap": {"args": [True]}}}
    info = json.loads(api.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert info["extra_generation_params"]["ClipCap model"] == "shapes-demo"
    assert [m.name for m in api.loader.loaded] == ["shapes-demo"]

    shared.opts.set("clipcap_model", "shapes-sbg")  # what the host's options route does
    info = json.loads(api.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert info["extra_generation_params"]["ClipCap model"] == "shapes-sbg"
    assert [m.name for m in api.loader.loaded] == ["shapes-demo", "shapes-sbg"]
    assert "ClipCap caption: a 24x24 picture" in info["infotexts"][0]
    assert api.webui.errors() == []


def test_offline_default_model_falls_back_to_the_demo_and_says_so(mode, make_webui, fake_models):
    """Settings model flickr8k, not installed: the section captions with the bundled demo model (as the tab, the
    prompt button and the API do), says so in the results panel and in the API's info, and logs no error."""
    from fastapi.testclient import TestClient

    webui = make_webui(mode, argv=["--api"], config={"clipcap_model": "flickr8k"})
    from modules import processing, scripts

    webui.create_ui()
    loader = fake_models()
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    body = {"prompt": "a red ball", "width": 24, "height": 24,
            "alwayson_scripts": {"ClipCap": {"args": [{"enabled": True, "outputs": ["panel"]}]}}}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    (note,) = info["extra_generation_params"]["ClipCap notes"]
    assert "'flickr8k' is not installed" in note and "'shapes-demo'" in note
    assert info["extra_generation_params"]["ClipCap model"] == "shapes-demo"
    assert info["extra_generation_params"]["ClipCap captions"] == ["a 24x24 picture"]
    assert [m.name for m in loader.loaded] == ["shapes-demo"]

    args = wd.script_args(scripts.scripts_txt2img, TITLE, section(model="", outputs=["panel"]))
    processed = processing.txt2img("a castle", *args, width=16, height=16)
    assert "ClipCap caption 1: a 16x16 picture" in processed.comments
    assert "ClipCap: The model 'flickr8k' is not installed here" in processed.comments
    assert webui.errors() == []


def test_a_named_missing_model_is_one_line_without_a_traceback(mode, make_webui, out):
    """A model picked explicitly is not replaced; its MissingFileError (what to download) is reported once, without
    a traceback."""
    webui = make_webui(mode)
    webui.create_ui()
    processed = txt2img(out, section(model="flickr8k"))
    assert len(images_in(out, "png")) == 1
    assert "MissingFileError" in processed.comments and "flickr8k" in processed.comments
    reports = [r for r in webui.errors() if "[ClipCap]" in r]
    assert len(reports) == 1 and "Traceback" not in reports[0]


def test_api_infotext_field_restores_the_section(api):
    """The host's API applies a request's ``infotext`` through the paste fields: the section comes back on."""
    text = ("old prompt\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, ClipCap model: shapes-demo, "
            "ClipCap preset: fast, ClipCap output: metadata")
    r = api.post("/sdapi/v1/txt2img", json={"prompt": "new", "width": 24, "height": 24, "infotext": text})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "ClipCap caption: a 24x24 picture" in info["infotexts"][0]


def test_api_img2img_caption_as_prompt(api):
    body = {"prompt": "oil painting of {caption}, dramatic", "width": 32, "height": 32,
            "init_images": [_b64_png(Image.new("RGB", (50, 20), "blue"))],
            "alwayson_scripts": {"ClipCap": {"args": [{"enabled": True, "outputs": [], "prompt_mode": "replace"}]}}}
    r = api.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["all_prompts"] == ["oil painting of a 50x20 picture, dramatic"]
    assert info["extra_generation_params"]["ClipCap prompt"] == "replace"


# ------------------------------------------------------------------------------------------------- img2img batch
def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name, size in (("a.png", (40, 30)), ("b.jpg", (20, 10))):
        Image.new("RGB", size, "green").save(folder / name)
        paths.append(folder / name)
    return paths


def _img2img_batch(source, batch_input, prompt, values, out, **kwargs):
    from modules import img2img, scripts

    args = wd.script_args(scripts.scripts_img2img, TITLE, values)
    return img2img.img2img(prompt, *args, batch_source=source, batch_input=batch_input, outpath=str(out),
                           width=32, height=32, **kwargs)


@pytest.mark.parametrize("source", ["from dir", pytest.param("upload", marks=pytest.mark.slow)])
def test_img2img_batch_uses_each_inputs_caption_as_prompt(webui, ui, tmp_path, source):
    paths = _inputs(tmp_path / "in")
    batch_input = str(tmp_path / "in") if source == "from dir" else [types.SimpleNamespace(name=str(p)) for p in paths]
    processed = _img2img_batch(source, batch_input, "masterpiece", section(outputs=["sidecar"], prompt_mode="append"),
                               tmp_path / "out")
    from modules import infotext_utils

    prompts = [infotext_utils.parse_generation_parameters(t)["Prompt"] for t in processed.infotexts]
    assert prompts == ["masterpiece, a 40x30 picture", "masterpiece, a 20x10 picture"]  # typed prompt kept each time
    sidecars = sorted(p.read_text(encoding="utf-8") for p in (tmp_path / "out").glob("*.txt"))
    assert sidecars == ["a 32x32 picture"] * 2  # the generated images are captioned too
    assert webui.errors() == []


@pytest.mark.parametrize("typed, prompt_mode, expected", [  # each rule: test_generation_metadata (library)
    pytest.param("", "replace", "a 40x30 picture", marks=pytest.mark.slow),
    pytest.param("ignored", "replace", "a 40x30 picture", marks=pytest.mark.slow),
    pytest.param("by an old master", "prepend", "a 40x30 picture, by an old master", marks=pytest.mark.slow),
    ("best quality, {caption}, oil", "append", "best quality, a 40x30 picture, oil"),
])
def test_img2img_prompt_modes(webui, ui, tmp_path, typed, prompt_mode, expected):
    from modules import infotext_utils

    _inputs(tmp_path / "in")
    processed = _img2img_batch("from dir", str(tmp_path / "in"), typed, section(outputs=[], prompt_mode=prompt_mode),
                               tmp_path / "out")
    first = infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert first["Prompt"] == expected
    assert first["ClipCap prompt"] == prompt_mode


def _captions_end_with_a_period(loader, monkeypatch) -> None:
    """Make the fake model end its captions with a period, as real models do."""
    load = type(loader).__call__

    def load_with_periods(self, name):
        model = load(self, name)
        caption = model.caption

        def with_period(images, **kwargs):
            results = caption(images, **kwargs)
            for r in results:
                r.text += "."
            return results
        model.caption = with_period
        return model
    monkeypatch.setattr(type(loader), "__call__", load_with_periods)


def test_joined_captions_lose_the_inner_period(webui, ui, tmp_path, monkeypatch):
    """Was: prompt "a ... picture., oil painting" and sidecar "mytrigger, a ... picture., best quality"."""
    from modules import infotext_utils

    _captions_end_with_a_period(ui, monkeypatch)
    _inputs(tmp_path / "in")
    processed = _img2img_batch("from dir", str(tmp_path / "in"), "oil painting",
                               section(outputs=["sidecar"], prompt_mode="prepend", prefix="mytrigger",
                                       suffix="best quality"), tmp_path / "out")
    prompts = [infotext_utils.parse_generation_parameters(t)["Prompt"] for t in processed.infotexts]
    assert prompts == ["a 40x30 picture, oil painting", "a 20x10 picture, oil painting"]
    sidecars = sorted(p.read_text(encoding="utf-8") for p in (tmp_path / "out").glob("*.txt"))
    assert sidecars == ["mytrigger, a 32x32 picture, best quality"] * 2
    assert webui.errors() == []


def test_img2img_batch_with_png_info_prompts(webui, ui, tmp_path):
    """With "use PNG info" the host resets the prompt per image (typed + the file's prompt); the caption joins that."""
    from PIL import PngImagePlugin

    folder = tmp_path / "in"
    folder.mkdir()
    for name, prompt in (("a.png", "a cat"), ("b.png", "a dog")):
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", f"{prompt}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8")
        Image.new("RGB", (16, 8), "red").save(folder / name, pnginfo=meta)
    processed = _img2img_batch("from dir", str(folder), "photo of", section(outputs=[], prompt_mode="append"),
                               tmp_path / "out", use_png_info=True, png_info_props=["Prompt"])
    from modules import infotext_utils

    prompts = [infotext_utils.parse_generation_parameters(t)["Prompt"] for t in processed.infotexts]
    assert prompts == ["photo of a cat, a 16x8 picture", "photo of a dog, a 16x8 picture"]


def test_renamed_on_clash_the_right_file_gets_the_caption(webui, ui, tmp_path):
    """img2img batch into an output folder names files after the inputs; on a clash "Add number suffix" saves
    ``a-1.png`` while the host reports ``a.png``. The earlier ``a.png`` must stay untouched."""
    from modules import shared

    shared.opts.set("save_images_replace_action", "Add number suffix")
    folder, out = tmp_path / "in", tmp_path / "out"
    _inputs(folder)

    def run(prompt, prefix):
        from modules import img2img, scripts

        args = wd.script_args(scripts.scripts_img2img, TITLE, section(prefix=prefix, existing="overwrite"))
        return img2img.img2img(prompt, *args, batch_source="from dir", batch_input=str(folder),
                               batch_output_dir=str(out), width=32, height=32)

    run("first run", "one")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["a.png", "a.txt", "b.png", "b.txt"]
    run("second run", "two")
    for name in ("a.png", "b.png", "a.txt", "b.txt"):
        assert (out / name).read_bytes() == first[name], name  # the first run's files are as they were
    assert (out / "a-1.txt").read_text(encoding="utf-8") == "two, a 32x32 picture"
    assert png_info(out / "a-1.png").startswith("second run\n")
    assert CAPTION_KEY in png_info(out / "a-1.png")


# ----------------------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_generation_with_the_real_demo_model(mode, make_webui, out):
    """End to end on the bundled demo model: the sidecar holds what the library writes for the saved image."""
    from lib_clipcap import Captioner

    webui = make_webui(mode, config={"clipcap_decoding": "greedy"})
    webui.create_ui()
    shapes = Image.open(Path(__file__).resolve().parents[2] / "lib_clipcap/assets/samples/shapes_00.png").convert("RGB")
    txt2img(out, section(preset="settings"), fake_samples=lambda p, n: [shapes.copy()])
    (f,) = images_in(out, "png")
    with Image.open(f) as saved:
        expected = Captioner.from_pretrained("shapes-demo", device="cpu").caption(
            [saved.convert("RGB")], decoding="greedy", max_new_tokens=40)[0].text
    from modules import infotext_utils

    assert expected and f.with_suffix(".txt").read_text(encoding="utf-8") == " ".join(expected.split())
    assert infotext_utils.parse_generation_parameters(png_info(f))[CAPTION_KEY] == " ".join(expected.split())
    assert webui.errors() == []


def _demo_tags(image, content: str) -> str:
    """What the batch tagger writes for ``image`` with ``content`` and its defaults (the demo model, greedy)."""
    from lib_clipcap import Captioner
    from lib_clipcap.batch.options import TagOptions
    from lib_clipcap.batch.policy import clean_caption, with_tags
    from lib_clipcap.tags import Tagger, TagSelection, caption_and_tag

    model = Captioner.from_pretrained("shapes-demo", device="cpu")
    options = TagOptions(inputs=["-"], content=content)
    sel: TagSelection = options.tag_selection()
    ((res, tags),) = caption_and_tag(model, Tagger(model, "general", cache=None), [image], sel, decoding="greedy",
                                     max_new_tokens=40)
    return with_tags(clean_caption(res.text, options), [t.tag for t in tags], options)


@pytest.mark.slow
@pytest.mark.parametrize("content", ["tags", "caption+tags"])
def test_generation_writes_tags_with_the_real_demo_model(mode, make_webui, out, content):
    """The section's "What to write": the sidecar and the metadata hold the batch tagger's text for the saved image
    (CLIP-ranked tags, kohya style, after the caption with caption+tags), and the infotext records the choice."""
    webui = make_webui(mode, config={"clipcap_decoding": "greedy"})
    webui.create_ui()
    shapes = Image.open(Path(__file__).resolve().parents[2] / "lib_clipcap/assets/samples/shapes_00.png").convert("RGB")
    processed = txt2img(out, section(preset="settings", prefix="sks", content=content),
                        fake_samples=lambda p, n: [shapes.copy()])
    (f,) = images_in(out, "png")
    with Image.open(f) as saved:
        want = _demo_tags(saved.convert("RGB"), content)
    assert "," in want and (content == "tags") is not want.startswith("a ")
    assert f.with_suffix(".txt").read_text(encoding="utf-8") == f"sks, {want}"
    from modules import infotext_utils

    params = infotext_utils.parse_generation_parameters(png_info(f))
    assert params[CAPTION_KEY] == want and params["ClipCap content"] == content
    assert "ClipCap content: " + content in processed.infotexts[0]
    from modules import scripts

    script = scripts.scripts_txt2img.script(TITLE)
    controls = scripts.scripts_txt2img.inputs[script.args_from:script.args_to]
    assert wd.paste("txt2img", png_info(f))[controls[-1]] == content  # PNG Info -> "Send to txt2img" restores it
    assert webui.errors() == []


def test_content_argument_old_positional_calls_and_bad_values():
    """Positional arguments from before ``content`` existed keep their meaning (caption); a bad value is reported
    and the caption written, as for every other argument."""
    from clipcap_webui.generation_ui import GenerationSettings

    old = [True, "", "fast", ["sidecar"], ".txt", "skip", "", "", "off"]
    assert GenerationSettings.from_args(old).content == "caption"
    assert GenerationSettings.from_args([*old, "caption+tags"]).content == "caption+tags"
    assert GenerationSettings.from_args([{"enabled": True, "content": "tags"}]).content == "tags"
    bad = GenerationSettings.from_args([{"enabled": True, "content": "wd14"}])
    assert bad.content == "caption" and "content='wd14'" in bad.problems[0] and "caption+tags" in bad.problems[0]


def test_generated_caption_route(api, tmp_path):
    """``POST /clipcap/v1/generated-caption``: the caption stored in an image the txt2img API returned."""
    body = {"prompt": "a red ball", "width": 40, "height": 30,
            "alwayson_scripts": {"ClipCap": {"args": [True, "shapes-demo", "fast", ["metadata"]]}}}
    image_b64 = api.post("/sdapi/v1/txt2img", json=body).json()["images"][0]
    r = api.post("/clipcap/v1/generated-caption", json={"image": image_b64})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["caption"] == "a 40x30 picture"
    assert data["settings"] == {"model": "shapes-demo", "preset": "fast", "output": "metadata"}
    assert data["parameters"].startswith("a red ball\n")
    plain = _b64_png(Image.new("RGB", (4, 4)))
    assert api.post("/clipcap/v1/generated-caption", json={"image": plain}).json() == \
        {"caption": None, "settings": None, "parameters": None}
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, format="GIF")
    r = api.post("/clipcap/v1/generated-caption", json={"image": base64.b64encode(gif.getvalue()).decode()})
    assert r.status_code == 400 and r.json()["error"]["type"] == "not_an_image"


def test_generated_caption_route_honours_api_auth(mode, make_webui, fake_models):
    from fastapi.testclient import TestClient

    webui = make_webui(mode, argv=["--api", "--api-auth", "u:p"])
    fake_models()
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    plain = {"image": _b64_png(Image.new("RGB", (4, 4)))}
    assert client.post("/clipcap/v1/generated-caption", json=plain).status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert client.post("/clipcap/v1/generated-caption", json=plain, headers=auth).status_code == 200
