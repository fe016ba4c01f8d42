"""Tests of lib_clipcap.hub: finding, downloading and verifying model files. Never touches the network: every test
runs with huggingface_hub.hf_hub_download replaced by a function that fails the test, unless the test installs its own
fake."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lib_clipcap import hub, registry
from lib_clipcap.errors import ClipCapError, MissingFileError, UnknownModelError

huggingface_hub = pytest.importorskip("huggingface_hub")

REPO_DIR = "Anshler__clip-prefix"
REAL_PROBE = hub._hub_unreachable  # the autouse fixture replaces it; one test checks the real probe
URL8K = "https://huggingface.co/Anshler/clip-prefix/resolve/main/flickr8k.pt"


def _forbidden(*args: Any, **kwargs: Any) -> None:
    pytest.fail(f"hf_hub_download must not be called here (args={args}, kwargs={kwargs})")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CLIPCAP_MODELS_DIR", "HF_HUB_OFFLINE", "CLIPCAP_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # default_models_dir() must never reach the real home
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _forbidden)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: None)  # the fakes stand in for a reachable hub


class FakeDownload:
    """Stands in for hf_hub_download: records calls and writes the file where huggingface_hub would."""

    def __init__(self, content: bytes = b"weights", error: Exception | None = None) -> None:
        self.content = content
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.progress_env: list[str | None] = []

    def __call__(
        self, repo_id: str, filename: str, *, revision: str | None = None, local_dir: Any = None, **kw: Any
    ) -> str:
        call = {"repo_id": repo_id, "filename": filename, "revision": revision, "local_dir": local_dir}
        self.calls.append({**call, **kw})
        self.progress_env.append(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
        if self.error is not None:
            raise self.error
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.content)
        return str(target)


def _with_sha(entry: registry.ModelEntry, sha: str) -> registry.ModelEntry:
    return dataclasses.replace(entry, source=dataclasses.replace(entry.source, sha256=sha))


def _place(path: Path, content: bytes = b"by hand") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "CLIPCAP_OFFLINE"])
@pytest.mark.parametrize("value,expected", [("1", True), ("TRUE", True), ("yes", True), (" Yes ", True),
                                            ("0", False), ("false", False), ("", False)])
def test_is_offline(monkeypatch, var: str, value: str, expected: bool) -> None:
    monkeypatch.setenv(var, value)
    assert hub.is_offline() is expected


def test_not_offline_by_default() -> None:
    assert hub.is_offline() is False


def test_default_models_dir_uses_home_cache_not_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert hub.default_models_dir() == tmp_path / "home" / ".cache" / "clipcap"


def test_default_models_dir_honours_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(tmp_path / "mine"))
    assert hub.default_models_dir() == tmp_path / "mine"
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", "~/models")
    assert hub.default_models_dir() == tmp_path / "home" / "models"


def test_hub_folder(tmp_path: Path) -> None:
    assert hub.hub_folder("Anshler/clip-prefix", tmp_path) == tmp_path / REPO_DIR


# ---------------------------------------------------------------------------------------------------------------------
# Hub sources


def test_offline_missing_hub_file_explains_where_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingFileError) as info:
        hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "flickr8k.pt" in msg
    assert str(tmp_path / REPO_DIR) in msg
    assert URL8K in msg
    assert "HF_HUB_OFFLINE" in msg


def test_clipcap_offline_and_download_false_also_block(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(MissingFileError, match="download=False") as info:
        hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path, download=False)
    assert URL8K in str(info.value)
    monkeypatch.setenv("CLIPCAP_OFFLINE", "true")
    with pytest.raises(MissingFileError, match="CLIPCAP_OFFLINE"):
        hub.resolve_model_file(registry.get_model("flickr30k"), models_dir=tmp_path)


def test_hand_placed_hub_file_is_used_without_download(tmp_path: Path) -> None:
    placed = _place(tmp_path / REPO_DIR / "flickr8k_gradient.pt")
    # hf_hub_download is the failing stub here (autouse fixture): any download attempt fails the test.
    assert hub.resolve_model_file(registry.get_model("flickr8k-gradient"), models_dir=tmp_path) == placed


def test_hand_placed_file_is_used_even_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    placed = _place(tmp_path / REPO_DIR / "flickr8k.pt")
    assert hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path) == placed


def test_download_calls_hf_hub_download_with_repo_file_revision_and_local_dir(tmp_path: Path, monkeypatch) -> None:
    fake = FakeDownload()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    path = hub.resolve_model_file(registry.get_model("flickr30k"), models_dir=tmp_path)
    assert path == tmp_path / REPO_DIR / "flickr30k.pt"
    assert path.read_bytes() == b"weights"
    assert len(fake.calls) == 1
    call = fake.calls[0]
    assert call["repo_id"] == "Anshler/clip-prefix"
    assert call["filename"] == "flickr30k.pt"
    assert call["revision"] == "main"
    assert Path(call["local_dir"]) == tmp_path / REPO_DIR
    # Second time the file is there: no new download.
    assert hub.resolve_model_file(registry.get_model("flickr30k"), models_dir=tmp_path) == path
    assert len(fake.calls) == 1


def test_progress_false_disables_bars_only_during_the_call(tmp_path: Path, monkeypatch) -> None:
    fake = FakeDownload()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path, progress=False)
    assert fake.progress_env == ["1"]
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    hub.resolve_model_file(registry.get_model("flickr30k"), models_dir=tmp_path, progress=False)
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    hub.resolve_model_file(registry.get_model("flickr8k-gradient"), models_dir=tmp_path, progress=True)
    assert fake.progress_env[-1] is None


def test_network_failure_becomes_missing_file_error_with_cause(tmp_path: Path, monkeypatch) -> None:
    boom = ConnectionError("Temporary failure in name resolution")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeDownload(error=boom))
    with pytest.raises(MissingFileError) as info:
        hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path)
    assert info.value.__cause__ is boom
    msg = str(info.value)
    assert "flickr8k.pt" in msg and URL8K in msg and str(tmp_path / REPO_DIR) in msg
    assert "ConnectionError" in msg


def test_partial_download_is_not_deleted_after_failure(tmp_path: Path, monkeypatch) -> None:
    # huggingface_hub resumes from its .incomplete file: a failed attempt must leave it alone.
    partial = _place(tmp_path / REPO_DIR / ".cache" / "huggingface" / "download" / "x.incomplete", b"half")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeDownload(error=OSError("reset by peer")))
    with pytest.raises(MissingFileError):
        hub.resolve_model_file(registry.get_model("flickr8k"), models_dir=tmp_path)
    assert partial.read_bytes() == b"half"


def test_sha256_mismatch_raises_and_keeps_the_file(tmp_path: Path) -> None:
    placed = _place(tmp_path / REPO_DIR / "flickr8k.pt", b"not the real weights")
    wrong = "0" * 64
    actual = hashlib.sha256(b"not the real weights").hexdigest()
    with pytest.raises(ClipCapError) as info:
        hub.resolve_model_file(_with_sha(registry.get_model("flickr8k"), wrong), models_dir=tmp_path)
    assert not isinstance(info.value, MissingFileError)
    msg = str(info.value)
    assert wrong in msg and actual in msg and str(placed) in msg
    assert placed.read_bytes() == b"not the real weights"


def test_sha256_match_passes_for_downloaded_file(tmp_path: Path, monkeypatch) -> None:
    content = b"x" * (3 * 1024 * 1024 + 17)  # spans several 1 MiB chunks
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeDownload(content))
    entry = _with_sha(registry.get_model("flickr8k"), hashlib.sha256(content).hexdigest().upper())
    path = hub.resolve_model_file(entry, models_dir=tmp_path)
    assert path.stat().st_size == len(content)


def test_sha256_mismatch_after_download_keeps_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeDownload(b"tampered"))
    with pytest.raises(ClipCapError, match="Checksum mismatch"):
        hub.resolve_model_file(_with_sha(registry.get_model("flickr8k"), "f" * 64), models_dir=tmp_path)
    assert (tmp_path / REPO_DIR / "flickr8k.pt").read_bytes() == b"tampered"


def test_models_dir_env_is_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(tmp_path / "envdir"))
    placed = _place(tmp_path / "envdir" / REPO_DIR / "flickr8k.pt")
    assert hub.resolve_model_file(registry.get_model("flickr8k")) == placed
    placed_manual = _place(tmp_path / "envdir" / "coco_weights.pt")
    assert hub.resolve_model_file(registry.get_model("coco")) == placed_manual


# ---------------------------------------------------------------------------------------------------------------------
# Manual and bundled sources


def test_manual_missing_names_folder_and_url(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError) as info:
        hub.resolve_model_file(registry.get_model("coco"), models_dir=tmp_path)
    msg = str(info.value)
    assert "coco_weights.pt" in msg
    assert str(tmp_path) in msg
    assert str(tmp_path / "coco_weights.pt") in msg
    assert "https://github.com/rmokady/CLIP_prefix_caption" in msg


def test_manual_present_is_found(tmp_path: Path) -> None:
    placed = _place(tmp_path / "conceptual_weights.pt")
    assert hub.resolve_model_file(registry.get_model("conceptual-captions"), models_dir=tmp_path) == placed


def test_bundled_missing_raises(tmp_path: Path) -> None:
    entry = registry.get_model("shapes-demo")
    entry = dataclasses.replace(
        entry, source=dataclasses.replace(entry.source, path="assets/__no_such_dir__/model.safetensors")
    )
    with pytest.raises(MissingFileError, match="__no_such_dir__"):
        hub.resolve_model_file(entry, models_dir=tmp_path)


def test_bundled_present_is_returned(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_PACKAGE_DIR", tmp_path)  # pretend the package lives in tmp_path
    placed = _place(tmp_path / "assets" / "shapes" / "clipcap.safetensors")
    assert hub.resolve_model_file(registry.get_model("shapes-demo"), models_dir=tmp_path / "m") == placed


# ---------------------------------------------------------------------------------------------------------------------
# GPT-2 bases, tokenizers and free-form specs


def test_resolve_hub_files_offline_lists_every_missing_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    folder = tmp_path / "openai-community__gpt2"
    _place(folder / "vocab.json")
    with pytest.raises(MissingFileError) as info:
        hub.resolve_hub_files("openai-community/gpt2", ["vocab.json", "merges.txt", "config.json"], models_dir=tmp_path)
    msg = str(info.value)
    assert "merges.txt" in msg and "config.json" in msg and str(folder) in msg
    assert "https://huggingface.co/openai-community/gpt2/resolve/main/merges.txt" in msg
    assert "'vocab.json'" not in msg  # present, so not listed as missing


def test_resolve_hub_files_downloads_only_missing(tmp_path: Path, monkeypatch) -> None:
    fake = FakeDownload()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    folder = tmp_path / "openai-community__gpt2"
    _place(folder / "vocab.json")
    got = hub.resolve_hub_files("openai-community/gpt2", ["vocab.json", "merges.txt"], models_dir=tmp_path,
                                revision="abc123")
    assert got == folder
    assert [(c["filename"], c["revision"]) for c in fake.calls] == [("merges.txt", "abc123")]


def test_resolve_local_or_hub_existing_path(tmp_path: Path) -> None:
    f = _place(tmp_path / "home" / "tok" / "tokenizer.json")
    assert hub.resolve_local_or_hub(str(f)) == f
    assert hub.resolve_local_or_hub("~/tok") == f.parent


def test_resolve_local_or_hub_gpt2_base(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "openai-community__gpt2"
    _place(folder / "vocab.json")
    _place(folder / "merges.txt")
    assert hub.resolve_local_or_hub("gpt2", models_dir=tmp_path, tokenizer_only=True) == folder
    with pytest.raises(MissingFileError, match="model.safetensors"):
        hub.resolve_local_or_hub("gpt2", models_dir=tmp_path)


def test_resolve_local_or_hub_bundled_missing() -> None:
    with pytest.raises(MissingFileError, match="__nothing_here__"):
        hub.resolve_local_or_hub("bundled:assets/__nothing_here__.json")


def test_resolve_local_or_hub_unknown(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="gpt2"):
        hub.resolve_local_or_hub("gpt-17", models_dir=tmp_path)
    with pytest.raises(MissingFileError, match="does not exist"):
        hub.resolve_local_or_hub(str(tmp_path / "nope" / "tokenizer.json"))


def test_importing_lib_clipcap_does_not_import_huggingface_hub() -> None:
    code = ("import sys, lib_clipcap.hub, lib_clipcap.registry; "
            "sys.exit(1 if 'huggingface_hub' in sys.modules else 0)")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_unreachable_hub_fails_fast_without_download_attempt(tmp_path: Path, monkeypatch) -> None:
    """No network at all: one quick probe, then a clear error naming the file and how to get it (no long retries)."""
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: "huggingface.co:443: Name or service not known")
    entry = registry.get_model("flickr8k")
    with pytest.raises(MissingFileError, match=r"cannot be reached.*Name or service not known") as ei:
        hub.resolve_model_file(entry, models_dir=tmp_path)
    assert URL8K in str(ei.value) and str(tmp_path / REPO_DIR) in str(ei.value)


def test_probe_reports_a_closed_port(monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub._REACH_CACHE.clear()
    reason = REAL_PROBE(timeout=2.0)
    assert reason is not None and f"127.0.0.1:{port}" in reason


def test_probe_goes_through_the_configured_proxy(monkeypatch) -> None:
    """Behind an HTTPS proxy the hub's own name may not resolve at all: the probe asks the proxy, as the download
    would (a direct probe said "unreachable" on networks where downloads work)."""
    import socket

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a name that never resolves
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        hub._REACH_CACHE.clear()
        assert REAL_PROBE(timeout=2.0) is None  # the proxy answers: downloads may work
        monkeypatch.setenv("NO_PROXY", "hub.invalid")  # bypassed: the probe goes direct, and fails
        hub._REACH_CACHE.clear()
        assert "hub.invalid" in (REAL_PROBE(timeout=2.0) or "")
    monkeypatch.delenv("NO_PROXY")
    hub._REACH_CACHE.clear()
    reason = REAL_PROBE(timeout=2.0)  # the proxy is gone: said so, naming it
    assert reason is not None and reason.startswith(f"proxy 127.0.0.1:{port}")
