"""What captioning returns: :class:`CaptionResult` per input with its :class:`Candidate` captions, and the input loop
every captioner shares (:func:`caption_in_batches`).

Kept apart from :mod:`lib_clipcap.captioner` so that the scorers, the SBG guesser and the evaluators can build and
read results without importing the captioner (and the captioner can import the scorers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ClipCapError

__all__ = ["Candidate", "CaptionResult", "caption_in_batches"]


@dataclass
class Candidate:
    """One candidate caption with its decoder score (mean token log-probability) and optional CLIP scores."""

    text: str
    score: float
    clip_score: float | None = None
    grammar: float | None = None


@dataclass
class CaptionResult:
    """The caption of one input. ``error`` is set (and ``text`` empty) when that input could not be captioned."""

    text: str
    score: float | None
    candidates: list[Candidate] = field(default_factory=list)
    source: str = ""
    error: str | None = None
    keywords: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def chosen(self) -> Candidate | None:
        """The candidate whose text is the result's caption (after re-ranking: the best one), if any."""
        return next((c for c in self.candidates if c.text == self.text), None)

    @property
    def clip_score(self) -> float | None:
        """CLIP-S of the chosen caption, when the candidates were scored (SBG, re-ranking); else None."""
        c = self.chosen
        return c.clip_score if c is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-friendly data, plus ``clip_score`` (the chosen caption's CLIP-S, or None)."""
        return {**asdict(self), "clip_score": self.clip_score}


def caption_in_batches(images: Sequence | Any, batch_size: int,
                       caption_batch: Callable[[list, int], list[CaptionResult]]) -> list[CaptionResult]:
    """The input loop every captioner shares: load each input safely, caption the loadable ones in batches.

    Args:
        images: PIL images, paths, bytes or arrays (one, or a list).
        batch_size: images per ``caption_batch`` call (>= 1).
        caption_batch: ``(pil_images, start) -> results``, one result per image; ``start`` is the position of the
            batch's first image among the loadable inputs (e.g. to derive a per-batch seed).

    Returns:
        One :class:`CaptionResult` per input, in order, its ``source`` set; an input that cannot be loaded gets a
        result with ``error`` set, and the others are captioned normally.

    Raises:
        ClipCapError: ``batch_size`` < 1 (before any input is read).
    """
    from .images import describe_source, try_load_image

    if batch_size < 1:
        raise ClipCapError(f"batch_size must be >= 1; got {batch_size}")
    if not isinstance(images, (list, tuple)):
        images = [images]
    results: list[CaptionResult | None] = [None] * len(images)
    pending: list[tuple[int, Any]] = []  # at most one batch of decoded images is held at a time
    start = 0

    def flush() -> None:
        nonlocal start
        for (i, _), res in zip(pending, caption_batch([img for _, img in pending], start)):
            res.source = describe_source(images[i])
            results[i] = res
        start += len(pending)
        pending.clear()

    for i, src in enumerate(images):
        img, err = try_load_image(src)
        if err is not None:
            results[i] = CaptionResult(text="", score=None, source=describe_source(src), error=err)
            continue
        pending.append((i, img))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return results  # type: ignore[return-value]
