"""The shared model holder: caching, eviction, and keeping the loaded model when another cannot be had."""

from __future__ import annotations

import pytest

from lib_clipcap import MissingFileError
from lib_clipcap.app.service import ModelManager


def test_missing_model_does_not_evict_the_loaded_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mgr = ModelManager(models_dir=tmp_path, policy=None, max_loaded=1)
    first = mgr.get("shapes-demo")
    with pytest.raises(MissingFileError, match="coco_weights.pt"):
        mgr.get("coco")
    assert mgr.loaded() == ["shapes-demo"]
    assert mgr.get("shapes-demo") is first  # cached, not reloaded


def test_least_recently_used_model_is_unloaded():
    unloaded = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def unload(self):
            unloaded.append(self.name)

    mgr = ModelManager(loader=Fake, max_loaded=2)
    mgr.get("a"), mgr.get("b"), mgr.get("a"), mgr.get("c")
    assert unloaded == ["b"] and mgr.loaded() == ["a", "c"]
    assert mgr.unload() == ["a", "c"] and mgr.loaded() == []


def test_caption_and_tag_matches_the_library_and_keeps_one_tagger_per_loaded_model(tmp_path, monkeypatch):
    """The generation section's path: one call captions and tags (one CLIP encoding), the tagger is reused while the
    model stays loaded and forgotten with it (it holds the model's CLIP)."""
    from PIL import Image

    from lib_clipcap.registry import package_path
    from lib_clipcap.tags import Tagger, TagSelection, caption_and_tag

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = Image.open(package_path("bundled:assets/samples/shapes_00.png")).convert("RGB")
    mgr = ModelManager(models_dir=tmp_path, max_loaded=1)
    sel = TagSelection(max_tags=4)
    ((res, tags),) = mgr.caption_and_tag([image], model="shapes-demo", selection=sel, decoding="greedy")
    model = mgr.get("shapes-demo")
    ((want_res, want_tags),) = caption_and_tag(model, Tagger(model, "general", cache=None), [image], sel,
                                               decoding="greedy")
    assert res.text == want_res.text and [t.tag for t in tags] == [t.tag for t in want_tags] and tags
    ((empty, only_tags),) = mgr.caption_and_tag([image], model="shapes-demo", content="tags", selection=sel)
    assert empty.text == "" and [t.tag for t in only_tags] == [t.tag for t in tags]
    assert len(mgr._taggers) == 1  # the same (model, vocabulary): built once
    (tagger,) = mgr._taggers.values()
    assert tagger.clip is model.clip
    mgr.unload("shapes-demo")
    assert mgr._taggers == {}  # the unloaded model's CLIP is not kept alive by its tagger
