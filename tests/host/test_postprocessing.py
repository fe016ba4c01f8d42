"""The Extras ("Postprocessing") caption step in the WebUI double: the host's Extras run (single image, uploaded
files, a folder) saves each image and writes ``pp.caption`` to ``<image>.txt`` with its own "Action for existing
captions" setting; our step only sets ``pp.caption``."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from PIL import Image

STEP = "ClipCap caption"


@pytest.fixture
def extras(webui, fake_models):
    webui.create_ui()  # builds the Extras tab: the step's UI under the host's setup_ui
    return fake_models()


def _args(**values):
    from modules import scripts

    return scripts.scripts_postproc.create_args_for_run({STEP: values})  # what the host's API does too


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "one.png")
    Image.new("RGB", (20, 10), "blue").save(folder / "two.jpg")
    return folder


def test_step_is_registered_with_a_ui(webui, extras):
    import gradio as gr
    from modules import scripts
    from modules import ui as host_ui

    step = [s for s in scripts.scripts_postproc.scripts_in_preferred_order() if s.name == STEP]
    assert len(step) == 1
    assert list(step[0].controls) == ["enable", "model", "preset"]
    assert isinstance(step[0].controls["enable"], gr.Checkbox) and step[0].controls["enable"].value is False
    assert set(step[0].controls.values()) <= set(host_ui.tabs_built["extras_script_inputs"])
    assert webui.errors() == []


def test_folder_batch_writes_captions(webui, extras, tmp_path):
    from modules import postprocessing

    out = tmp_path / "out"
    postprocessing.run_postprocessing(2, None, None, str(_folder(tmp_path)), str(out), True,
                                      *_args(enable=True, preset="fast"))
    assert (out / "one.txt").read_text(encoding="utf-8") == "a 40x30 picture"
    assert (out / "two.txt").read_text(encoding="utf-8") == "a 20x10 picture"
    assert [c["sizes"] for c in extras.loaded[0].calls] == [[(40, 30)], [(20, 10)]]
    assert all(c["kwargs"]["decoding"] == "greedy" for c in extras.loaded[0].calls)
    assert webui.errors() == []


@pytest.mark.parametrize("action, expected", [
    pytest.param("Ignore", "a 40x30 picture", marks=pytest.mark.slow),
    # The fast tier keeps "Prepend" (the join); the others run in the full suite.
    pytest.param("Keep", "old words", marks=pytest.mark.slow),
    ("Prepend", "old words a 40x30 picture"),  # the host's naming: the old caption first
    pytest.param("Append", "a 40x30 picture old words", marks=pytest.mark.slow),
])
def test_hosts_existing_caption_action(webui, extras, tmp_path, action, expected):
    from modules import postprocessing, shared

    shared.opts.set("postprocessing_existing_caption_action", action)
    out = tmp_path / "out"
    out.mkdir()
    (out / "one.txt").write_text("old words", encoding="utf-8")
    postprocessing.run_postprocessing(2, None, None, str(_folder(tmp_path)), str(out), True, *_args(enable=True))
    assert (out / "one.txt").read_text(encoding="utf-8") == expected


def test_single_image_and_uploads(webui, extras, tmp_path):
    from modules import postprocessing, shared

    shared.opts.set("outdir_extras_samples", str(tmp_path / "extras"))
    postprocessing.run_postprocessing(0, Image.new("RGB", (12, 12)), None, "", "", True, *_args(enable=True))
    folder = _folder(tmp_path)
    uploads = [types.SimpleNamespace(name=str(folder / "one.png"))]
    postprocessing.run_postprocessing(1, None, uploads, "", "", True, *_args(enable=True))
    captions = sorted(p.read_text(encoding="utf-8") for p in (tmp_path / "extras").glob("*.txt"))
    assert captions == ["a 12x12 picture", "a 40x30 picture"]


def test_disabled_or_unset_step_does_nothing(webui, extras, tmp_path):
    """Off, or not mentioned in an API call (the host then passes None for every control)."""
    from modules import postprocessing, scripts

    out = tmp_path / "out"
    folder = _folder(tmp_path)
    postprocessing.run_postprocessing(2, None, None, str(folder), str(out), True, *_args(enable=False))
    unset = scripts.scripts_postproc.create_args_for_run({})
    postprocessing.run_postprocessing(2, None, None, str(folder), str(out), True, *unset)
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]  # saved, no caption file
    assert extras.loaded == []


def test_joins_a_caption_from_an_earlier_step(webui, extras):
    from modules import scripts_postprocessing

    from clipcap_webui import postprocessing

    pp = scripts_postprocessing.PostprocessedImage(Image.new("RGB", (8, 8)))
    pp.caption = "1girl, solo"  # e.g. the host's DeepBooru step ran first
    postprocessing.process(pp, enable=True, model=None, preset="settings")
    assert pp.caption == "1girl, solo, a 8x8 picture"


def test_failure_saves_the_image_without_a_caption(webui, tmp_path):
    from modules import postprocessing

    from clipcap_webui import host, memory
    from lib_clipcap.app import service

    webui.create_ui()

    class Broken:
        def __init__(self):
            import torch

            self.model = torch.nn.Linear(2, 2)

        def to(self, *a, **k):
            return self

        def caption(self, images, **kw):
            raise RuntimeError("simulated failure")

        def unload(self):
            pass

    service.reset_default_manager()
    service.default_manager(models_dir=host.models_dir(), policy=memory.make_policy(), loader=lambda n: Broken())
    out = tmp_path / "out"
    postprocessing.run_postprocessing(2, None, None, str(_folder(tmp_path)), str(out), True, *_args(enable=True))
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]
    assert [r for r in webui.errors() if "[ClipCap]" in r and "simulated failure" in r]
