"""What users receive: no file of the repository names a path of the machine it was made on, and code and docs
cite only files that ship with it (users do not have the team's design notes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".json", ".toml", ".txt", ".sh", ".js", ".css", ".cfg", ".yml", ".yaml", ".ini"}


def tracked_files(*suffixes: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [ROOT / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.suffix in suffixes and f.is_file()]


def tracked_text_files() -> list[Path]:
    return [f for f in tracked_files(*TEXT_SUFFIXES) if f.stat().st_size < 2_000_000]


def safetensors_headers() -> dict[str, str]:
    """The JSON header (with its metadata) of every tracked .safetensors file: configs are saved there too."""
    import struct

    out = {}
    for f in tracked_files(".safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            out[str(f.relative_to(ROOT))] = fh.read(n).decode("utf-8", "replace")
    return out


def test_no_file_holds_a_path_of_this_checkout():
    here = str(ROOT)
    offenders = [str(f.relative_to(ROOT)) for f in tracked_text_files()
                 if here in f.read_text(encoding="utf-8", errors="replace")]
    offenders += [name for name, header in safetensors_headers().items() if here in header]
    assert offenders == [], f"files naming {here}: {offenders}"


@pytest.mark.parametrize("name", ["HOST_API.md", "DESIGN.md", "STYLE.md"])
def test_nothing_cites_the_teams_private_notes(name):
    offenders = [str(f.relative_to(ROOT)) for f in tracked_text_files()
                 if name in f.read_text(encoding="utf-8", errors="replace")
                 and f.name != Path(__file__).name]
    assert offenders == [], f"{name} is not shipped, but these files cite it: {offenders}"
