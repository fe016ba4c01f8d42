"""What the extension needs from the Python environment, as data, checked without pip.

Used by ``install.py`` (at every host launch: decide what to install, in one pip call) and by the script at import
(report what is disabled). Two kinds of requirement:

- **host-pinned** packages (torch, open-clip-torch, safetensors, tokenizers via transformers, huggingface-hub...): the
  host reinstalls its pins at every launch, so the extension never installs or upgrades them. When one is missing or
  older than a feature needs, that feature is disabled with a message saying why;
- **ours**: installed when missing or older than the lower bound (lower bounds only, never ``==``).

A requirement may name an **alternative** that serves the same feature: the captioner's CLIP runs on open_clip >= 2.20
or, where open_clip is missing or older, on transformers' ``CLIPModel`` (``lib_clipcap.clip_transformers``, chosen
by ``lib_clipcap.clip.clip_backend`` with the same rule). Then the feature stays on and a note says which serves.

What a host pins differs: Forge Neo ships no open_clip at all (its requirements.txt has none), so there it is ours
(a version without open_clip 2.20's ``protobuf<4`` bound, which Neo's protobuf 4.25 would break); Forge Classic pins
``open-clip-torch==1.3.0``, too old for the open_clip backbone, and re-pins it after every extension installer, so
there the captioner's CLIP runs through Classic's transformers 4.30.2 (docs/hosts.md). :func:`detect_host` tells the
hosts apart without importing them.

Nothing here imports the packages it checks: versions come from ``importlib.metadata``, so a check costs
milliseconds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field

CORE = "captioning"


@dataclass(frozen=True)
class Requirement:
    """One distribution the extension uses.

    Attributes:
        name: distribution name as pip knows it.
        minimum: lowest version that works (``None``: any).
        feature: what stops working without it (:data:`CORE` means the whole extension).
        pinned: the hosts pin it (A1111 / Forge ``requirements_versions.txt``, or a dependency they pin): never
            installed or upgraded by the extension.
        alternative: another (host-pinned) distribution that serves ``feature`` when this one is missing or too old
            (``None``: none does).
    """

    name: str
    minimum: str | None
    feature: str
    pinned: bool
    alternative: Requirement | None = None

    @property
    def specifier(self) -> str:
        return f"{self.name}>={self.minimum}" if self.minimum else self.name


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "2.1", CORE, pinned=True),
    # The CLIP backbone: open_clip, else transformers' CLIPModel (4.30: A1111's and Classic's pin, the oldest tested)
    Requirement("open-clip-torch", "2.20.0", CORE, pinned=True,
                alternative=Requirement("transformers", "4.30.0", CORE, pinned=True)),
    Requirement("safetensors", "0.4.2", CORE, pinned=True),
    Requirement("numpy", None, CORE, pinned=True),
    Requirement("Pillow", "9.5", CORE, pinned=True),
    Requirement("tokenizers", "0.13.3", "models with their own tokenizer (the bundled demo model)", pinned=True),
    Requirement("huggingface-hub", "0.16", "model downloads from the Hugging Face Hub", pinned=True),
    Requirement("ftfy", None, CORE, pinned=False),  # open_clip's text cleaning; ours if a host lacks it
    Requirement("regex", None, CORE, pinned=False),
)


# Per host, the requirements that differ from REQUIREMENTS (same name): Neo does not pin open_clip.
HOST_REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "neo": (Requirement("open-clip-torch", "2.26.1", CORE, pinned=False),),
}


def _find(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect_host() -> str:
    """``"a1111"``, ``"forge"``, ``"neo"`` or ``"classic"``, from what the webui root on ``sys.path`` ships (install.py
    runs with it on ``PYTHONPATH``), importing nothing of it but ``modules_forge.forge_version`` (same answer as
    :func:`clipcap_webui.host.host_info`)."""
    if not _find("modules_forge"):
        return "a1111"
    try:  # a two-line module in every Forge (launch_utils.py imports it first thing)
        version = str(getattr(importlib.import_module("modules_forge.forge_version"), "version", "") or "")
    except Exception:  # noqa: BLE001 - whatever a host's file does, install.py goes on
        version = ""
    if version.lower().startswith("neo"):
        return "neo"
    return "classic" if _find("ldm_patched") else "forge"


def requirements_for(host: str) -> tuple[Requirement, ...]:
    """:data:`REQUIREMENTS` with ``host``'s differences (:data:`HOST_REQUIREMENTS`)."""
    over = {r.name: r for r in HOST_REQUIREMENTS.get(host, ())}
    return tuple(over.get(r.name, r) for r in REQUIREMENTS)


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: ``"2.14.1+cu130"`` -> ``(2, 14, 1)``."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Plan:
    """The outcome of :func:`check`.

    Attributes:
        install: specifiers to install in one pip call (ours only), e.g. ``['ftfy>=6.1']``.
        disabled: ``{feature: reason}`` for features a host-pinned package cannot serve.
        notes: one line per feature that an alternative serves (what is missing, and what serves instead).
    """

    install: list[str]
    disabled: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def core_ok(self) -> bool:
        return CORE not in self.disabled


def check(version_of: Callable[[str], str | None] = _installed,
          requirements: tuple[Requirement, ...] | None = None, host: str | None = None) -> Plan:
    """Compare the environment with ``requirements`` (``version_of(name)`` gives an installed version or ``None``;
    default requirements: those of ``host``, default the running one, :func:`detect_host`)."""
    if requirements is None:
        requirements = requirements_for(host or detect_host())
    plan = Plan(install=[], disabled={})

    def satisfied(req: Requirement) -> tuple[bool, str | None]:
        have = version_of(req.name)
        return have is not None and (req.minimum is None or parse_version(have) >= parse_version(req.minimum)), have

    def shortfall(req: Requirement, have: str | None) -> str:
        return f"{req.name} is not installed" if have is None else f"{req.name} {have} is older than {req.minimum}"

    for req in requirements:
        ok, have = satisfied(req)
        if ok:
            continue
        if not req.pinned:
            plan.install.append(req.specifier)
            continue
        why = shortfall(req, have)
        alt = req.alternative
        if alt is not None:
            alt_ok, alt_have = satisfied(alt)
            if alt_ok:
                plan.notes.append(f"{req.feature}: {why} (the WebUI pins it); {alt.name} {alt_have} serves instead")
                continue
            why += f" and {shortfall(alt, alt_have)}"
        them = "them" if alt is not None else "it"
        why += f" (the WebUI pins {them}, so ClipCap leaves {them} alone)"
        plan.disabled[req.feature] = (plan.disabled[req.feature] + "; " + why) if req.feature in plan.disabled \
            else why
    return plan


def messages(plan: Plan) -> list[str]:
    """One line per disabled feature, then one per feature an alternative serves (:attr:`Plan.notes`)."""
    return [f"{feature} disabled: {why}" for feature, why in plan.disabled.items()] + list(plan.notes)
