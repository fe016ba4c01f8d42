"""Named decoding presets, for places where a full set of decoding options is too much (a generation section).

``settings`` means "whatever the saved settings say"; the others override only the decoding options they name and
keep the rest (model, banned words, lengths, re-ranking) from the settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DECODING_PRESETS", "PRESET_LABELS", "apply_preset"]

#: preset -> option values it sets (keys of :mod:`lib_clipcap.options_table`).
DECODING_PRESETS: dict[str, dict[str, Any]] = {
    "settings": {},
    "fast": {"decoding": "greedy", "num_candidates": 1},
    "best": {"decoding": "beam", "beam_size": 5, "num_candidates": 1},
    "varied": {"decoding": "sample", "temperature": 1.0, "top_k": 0, "top_p": 0.9, "num_candidates": 1},
}

#: What a UI shows for each preset.
PRESET_LABELS: dict[str, str] = {
    "settings": "Settings (Caption section)",
    "fast": "Fast (greedy)",
    "best": "Best (beam search)",
    "varied": "Varied (sampling)",
}


def apply_preset(values: Mapping[str, Any], preset: str) -> dict[str, Any]:
    """``values`` (option values, e.g. from the settings) with the preset's decoding options laid over them.

    Raises:
        ValueError: ``preset`` is unknown (the message lists the valid names).
    """
    try:
        overrides = DECODING_PRESETS[preset]
    except KeyError:
        raise ValueError(f"decoding preset {preset!r} is unknown; valid: {', '.join(DECODING_PRESETS)}") from None
    return {**values, **overrides}
