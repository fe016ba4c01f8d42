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
