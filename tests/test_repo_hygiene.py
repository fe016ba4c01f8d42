"""What users receive: no file of the repository names a path of the machine it was made on, and code and docs
cite only files that ship with it (users do not have the team's design notes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _pyast import parse_file

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


#: typing names with a builtin or collections.abc spelling (PEP 585/604): the code base writes ``list[str]``,
#: ``X | None`` and ``collections.abc.Callable`` everywhere (one typing style, issue 23).
OLD_TYPING = {"Optional", "Union", "List", "Dict", "Tuple", "Set", "FrozenSet", "Type", "Callable", "Iterable",
              "Iterator", "Sequence", "Mapping", "MutableMapping", "Awaitable", "Generator", "ContextManager"}
#: Where an old spelling is meant: a runtime type handed to pydantic's create_model (read alike by pydantic 1 and 2).
OLD_TYPING_ALLOWED = {("lib_clipcap/app/api.py", "Optional")}


def test_one_typing_style():
    import ast

    found = []
    for f in tracked_files(".py"):
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith("tests/host/double"):  # the host doubles copy the hosts' own code and style
            continue
        for node in ast.walk(parse_file(f)):
            if isinstance(node, ast.ImportFrom) and node.module == "typing":
                found += [f"{rel}: typing.{a.name}" for a in node.names
                          if a.name in OLD_TYPING and (rel, a.name) not in OLD_TYPING_ALLOWED]
    assert not found, "write list[...], X | None, collections.abc.* instead: " + "; ".join(found)
