"""Result tables in the papers' formats (console and Markdown) and the JSON result file.

Styles (columns and scale):

``flickr``  Huynh et al., Table 1: BLEU-1..4, METEOR, ROUGE-L as fractions, 3 decimals (0.698 ...).
``coco``    ClipCap (Mokady et al.): BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE x 100, 2 decimals (32.15 ...).
``clips``   CLIP-S paper (Cho et al.): BLEU-4, CIDEr, METEOR, SPICE, CLIP-S, RefCLIP-S x 100, 1 decimal.
``all``     every score present, as fractions, 3 decimals (CIDEr is already on its own scale).

A metric that was not computed shows as ``-``; the skipped reasons are printed under the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .metrics import SCORE_NAMES

STYLES: dict[str, tuple[tuple[str, ...], float, int]] = {
    "flickr": (("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L"), 1.0, 3),
    "coco": (("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"), 100.0, 2),
    "clips": (("BLEU-4", "CIDEr", "METEOR", "SPICE", "CLIP-S", "RefCLIP-S"), 100.0, 1),
}
_HEADERS = {"ROUGE-L": "ROUGE-L"}


def _as_dict(row: Any) -> dict[str, Any]:
    return row.to_dict() if hasattr(row, "to_dict") else dict(row)


def table_rows(results: Iterable[Any], style: str = "flickr") -> tuple[list[str], list[list[str]], dict[str, str]]:
    """Header, formatted rows and the union of skipped reasons for ``results`` (EvalResults or their dicts)."""
    results = [_as_dict(r) for r in results]
    if style == "all":
        present = {k for r in results for k in r["scores"]}
        cols = [c for c in SCORE_NAMES if c in present] + sorted(present - set(SCORE_NAMES))
        scale, digits = 1.0, 3
    elif style in STYLES:
        cols, scale, digits = list(STYLES[style][0]), STYLES[style][1], STYLES[style][2]
    else:
        raise ValueError(f"unknown table style {style!r}; use {', '.join([*STYLES, 'all'])}")
    header = ["Model", *[_HEADERS.get(c, c) for c in cols]]
    rows = []
    skipped: dict[str, str] = {}
    for r in results:
        cells = [r["name"]]
        for c in cols:
            v = r["scores"].get(c)
            cells.append("-" if v is None else f"{v * scale:.{digits}f}")
        rows.append(cells)
        for k, why in (r.get("skipped") or {}).items():
            if k in cols or style == "all":
                skipped.setdefault(k, why)
    return header, rows, skipped


def format_table(results: Sequence[Any], *, style: str = "flickr", markdown: bool = False,
                 title: str | None = None) -> str:
    """The results as a table (fixed-width text, or Markdown), with skipped metrics explained below it."""
    header, rows, skipped = table_rows(results, style)
    results = [_as_dict(r) for r in results]
    lines: list[str] = []
    if title is None and results:
        r0 = results[0]
        title = f"{r0['dataset']} ({r0['split']}, {r0['images']} images)"
        if r0.get("tokenizer") not in (None, "ptb"):
            title += f" - tokenizer {r0['tokenizer']!r}: NOT comparable with published numbers"
    if markdown:
        if title:
            lines += [f"**{title}**", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
        fmt = lambda cells: "  ".join(  # noqa: E731
            (c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
        if title:
            lines.append(title)
        lines.append(fmt(header))
        lines.append("  ".join("-" * w for w in widths))
        lines += [fmt(r) for r in rows]
    if skipped:
        lines.append("")
        lines += [f"{'- ' if markdown else ''}{k} skipped: {why}" for k, why in sorted(skipped.items())]
    return "\n".join(lines)


def save_json(result: Any, path: str | Path) -> Path:
    """Write one result (scores, settings, per-image captions) as JSON, atomically."""
    from ..fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _as_dict(result) if not isinstance(result, list) else [_as_dict(r) for r in result]
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def load_json(path: str | Path) -> list[dict[str, Any]]:
    """Results saved by :func:`save_json` (one result or a list)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]
