"""Tests of the model registry (lib_clipcap/models.json + lib_clipcap/registry.py). Offline and fast."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from lib_clipcap import registry
from lib_clipcap.errors import ClipCapError, UnknownModelError

ANSHLER = {
    "flickr8k": "flickr8k.pt",
    "flickr8k-gradient": "flickr8k_gradient.pt",
    "flickr30k": "flickr30k.pt",
    "flickr30k-gradient": "flickr30k_gradient.pt",
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    # The loader is cached per path; clear it so a test's temporary registry never leaks into another test.
    registry._load.cache_clear()
    yield
    registry._load.cache_clear()


def _valid_doc() -> dict[str, Any]:
    return {
        "schema": 1,
        "gpt2_bases": {
            "gpt2": {"repo": "openai-community/gpt2", "files": ["config.json"], "tokenizer_files": ["vocab.json"]}
        },
        "models": [
            {
                "name": "good",
                "kind": "clipcap",
                "description": "d",
                "source": {"type": "hub", "repo": "a/b", "filename": "m.pt", "revision": "main", "sha256": None},
                "clip": {"model": "ViT-B-32", "pretrained": "openai"},
                "normalize": False,
                "prefix_length": 10,
                "mapping": "mlp",
                "tokenizer": "gpt2",
                "gpt2": "gpt2",
                "license": "MIT",
                "paper": "p",
            }
        ],
    }


def _use_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, doc: Any, raw: str | None = None) -> Path:
    path = tmp_path / "models.json"
    path.write_text(raw if raw is not None else json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(registry, "_MODELS_JSON", path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The shipped registry


@pytest.mark.parametrize("name,filename", sorted(ANSHLER.items()))
def test_anshler_models(name: str, filename: str) -> None:
    entry = registry.get_model(name)
    assert entry.name == name
    assert entry.kind == "clipcap"
    assert entry.source.type == "hub"
    assert entry.source.repo == "Anshler/clip-prefix"
    assert entry.source.filename == filename
    assert entry.source.revision == "main"
    assert entry.source.sha256 is None
    assert entry.source.download_url == f"https://huggingface.co/Anshler/clip-prefix/resolve/main/{filename}"
    assert (entry.clip.model, entry.clip.pretrained) == ("ViT-L-14", "openai")
    assert entry.normalize is True
    assert entry.prefix_length == 10
    assert entry.mapping == "mlp"
    assert entry.tokenizer == "gpt2"
    assert entry.gpt2 == "gpt2"


def test_list_models_contains_all_and_filters_by_kind() -> None:
    names = registry.list_models()
    for expected in [*ANSHLER, "coco", "conceptual-captions", "coco-transformer", "shapes-demo"]:
        assert expected in names
    sbg = registry.list_models("sbg")
    assert {"sbg-flickr", "shapes-sbg"} <= set(sbg)
    assert sorted(registry.list_models("clipcap") + sbg) == sorted(names)
    assert not set(registry.list_models("clipcap")) & set(sbg)
    assert registry.DEFAULT_MODEL in names
    with pytest.raises(ClipCapError, match="valid kinds"):
        registry.list_models("diffusion")


def test_original_clipcap_entries_are_manual() -> None:
    for name, filename in (("coco", "coco_weights.pt"), ("conceptual-captions", "conceptual_weights.pt")):
        entry = registry.get_model(name)
        assert entry.source.type == "manual"
        assert entry.source.filename == filename
        assert entry.source.url == "https://github.com/rmokady/CLIP_prefix_caption"
        assert entry.source.instructions
        assert entry.source.download_url is None
        assert (entry.clip.model, entry.clip.pretrained) == ("ViT-B-32", "openai")
        assert entry.normalize is False
        assert (entry.prefix_length, entry.mapping) == (10, "mlp")
    transformer = registry.get_model("coco-transformer")
    assert transformer.source.type == "manual"
    assert (transformer.mapping, transformer.prefix_length) == ("transformer", 40)


def test_shapes_demo_is_bundled_and_need_not_exist() -> None:
    entry = registry.get_model("shapes-demo")
    assert entry.source.type == "bundled"
    assert entry.source.path == "assets/shapes/clipcap.safetensors"
    assert entry.clip.is_bundled
    assert entry.tokenizer == "bundled:assets/shapes/tokenizer.json"
    assert entry.prefix_length == 4
    pkg = Path(registry.__file__).resolve().parent
    assert registry.package_path(entry.clip.pretrained) == pkg / "assets" / "shapes" / "clip.safetensors"
    assert registry.package_path(entry.source.path or "") == pkg / "assets" / "shapes" / "clipcap.safetensors"


def test_get_model_is_case_insensitive() -> None:
    assert registry.get_model("  FLICKR30K-Gradient ").name == "flickr30k-gradient"


def test_unknown_model_lists_names_and_suggests_close_match() -> None:
    with pytest.raises(UnknownModelError) as info:
        registry.get_model("flickr8")
    msg = str(info.value)
    assert isinstance(info.value, KeyError)
    assert "Did you mean 'flickr8k'" in msg
    for name in registry.list_models():
        assert name in msg


def test_unknown_model_without_close_match() -> None:
    with pytest.raises(UnknownModelError) as info:
        registry.get_model("zzzz")
    assert "Did you mean" not in str(info.value)
    assert "flickr8k" in str(info.value)


def test_entries_are_frozen() -> None:
    entry = registry.get_model("flickr8k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.prefix_length = 3  # type: ignore[misc]


def test_gpt2_base_returns_a_copy() -> None:
    base = registry.gpt2_base("gpt2")
    assert base["repo"] == "openai-community/gpt2"
    assert base["revision"] == "main"
    assert base["files"] == ["config.json", "model.safetensors"]
    assert base["tokenizer_files"] == ["vocab.json", "merges.txt"]
    base["files"].append("junk")
    assert "junk" not in registry.gpt2_base("gpt2")["files"]
    assert registry.list_gpt2_bases() == ["gpt2"]
    with pytest.raises(UnknownModelError, match="gpt2"):
        registry.gpt2_base("gtp2")


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.bin", "bundled:../../x", "assets/../../x", "", "bundled:"])
def test_package_path_rejects_paths_outside_the_package(rel: str) -> None:
    with pytest.raises(ClipCapError):
        registry.package_path(rel)


def test_package_path_accepts_prefix_or_not() -> None:
    assert registry.package_path("bundled:a/b.txt") == registry.package_path("a/b.txt")


def test_loading_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _use_registry(monkeypatch, tmp_path, _valid_doc())
    assert registry.list_models() == ["good"]
    path.write_text("not json", encoding="utf-8")  # not re-read: loaded once per path
    assert registry.get_model("GOOD").source.repo == "a/b"


# ---------------------------------------------------------------------------------------------------------------------
# Validation of a broken registry file


def _break(mutator) -> dict[str, Any]:
    doc = copy.deepcopy(_valid_doc())
    mutator(doc)
    return doc


BROKEN = [
    ("prefix_length", lambda d: d["models"][0].update(prefix_length="ten")),
    ("prefix_length", lambda d: d["models"][0].update(prefix_length=0)),
    ("prefix_length", lambda d: d["models"][0].update(prefix_length=True)),
    ("kind", lambda d: d["models"][0].update(kind="diffusion")),
    ("normalize", lambda d: d["models"][0].update(normalize=1)),
    ("mapping", lambda d: d["models"][0].update(mapping="lstm")),
    ("repo", lambda d: d["models"][0]["source"].pop("repo")),
    ("filename", lambda d: d["models"][0]["source"].update(filename="../evil.pt")),
    ("type", lambda d: d["models"][0]["source"].update(type="ftp")),
    ("sha256", lambda d: d["models"][0]["source"].update(sha256="abc")),
    ("url", lambda d: d["models"][0].update(source={"type": "manual", "filename": "x.pt"})),
    ("filename", lambda d: d["models"][0].update(source={"type": "manual", "filename": "sub/x.pt", "url": "u"})),
    ("path", lambda d: d["models"][0].update(source={"type": "bundled", "path": "../x"})),
    ("source", lambda d: d["models"][0].update(source="a/b")),
    ("clip", lambda d: d["models"][0].update(clip="ViT-B-32")),
    ("pretrained", lambda d: d["models"][0]["clip"].pop("pretrained")),
    ("tokenizer", lambda d: d["models"][0].update(tokenizer="bert")),
    ("gpt2", lambda d: d["models"][0].update(gpt2="gpt3")),
    ("description", lambda d: d["models"][0].pop("description")),
]


@pytest.mark.parametrize("field,mutator", BROKEN, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BROKEN)])
def test_broken_entry_names_entry_and_field(monkeypatch, tmp_path, field, mutator) -> None:
    _use_registry(monkeypatch, tmp_path, _break(mutator))
    with pytest.raises(ClipCapError) as info:
        registry.list_models()
    msg = str(info.value)
    assert "'good'" in msg
    assert f"'{field}'" in msg


def test_sbg_entries_may_omit_mapping(monkeypatch, tmp_path) -> None:
    def mutate(d):
        m = d["models"][0]
        m["kind"] = "sbg"
        del m["prefix_length"]
        del m["mapping"]

    _use_registry(monkeypatch, tmp_path, _break(mutate))
    entry = registry.get_model("good")
    assert (entry.kind, entry.prefix_length, entry.mapping) == ("sbg", None, None)
    assert registry.list_models("sbg") == ["good"]


def test_sha256_is_normalised_to_lower_case(monkeypatch, tmp_path) -> None:
    _use_registry(monkeypatch, tmp_path, _break(lambda d: d["models"][0]["source"].update(sha256="AB" * 32)))
    assert registry.get_model("good").source.sha256 == "ab" * 32


def test_duplicate_names_are_rejected(monkeypatch, tmp_path) -> None:
    def mutate(d):
        twin = copy.deepcopy(d["models"][0])
        twin["name"] = "GOOD"
        d["models"].append(twin)

    _use_registry(monkeypatch, tmp_path, _break(mutate))
    with pytest.raises(ClipCapError, match="duplicates"):
        registry.list_models()


def test_entry_without_name(monkeypatch, tmp_path) -> None:
    _use_registry(monkeypatch, tmp_path, _break(lambda d: d["models"][0].pop("name")))
    with pytest.raises(ClipCapError, match=r"models\[0\].*'name'"):
        registry.list_models()


@pytest.mark.parametrize(
    "raw,match",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"schema": 2, "models": []}), "schema"),
        (json.dumps([1, 2]), "JSON object"),
        (json.dumps({"schema": 1, "models": {}}), "'models' must be a list"),
        (json.dumps({"schema": 1, "gpt2_bases": {"gpt2": {"repo": "r", "files": []}}, "models": []}), "'files'"),
    ],
)
def test_broken_file(monkeypatch, tmp_path, raw: str, match: str) -> None:
    _use_registry(monkeypatch, tmp_path, None, raw=raw)
    with pytest.raises(ClipCapError, match=match):
        registry.get_model("good")


def test_unknown_fields_warn_but_load(monkeypatch, tmp_path, caplog) -> None:
    _use_registry(monkeypatch, tmp_path, _break(lambda d: d["models"][0].update(prefix_lenght=3)))
    with caplog.at_level("WARNING", logger="lib_clipcap.registry"):
        assert registry.list_models() == ["good"]
    assert "prefix_lenght" in caplog.text
