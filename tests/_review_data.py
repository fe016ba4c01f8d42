"""A tagged training folder for the review tests: shapes-world images with their sidecar captions, one wrong."""

from __future__ import annotations

from pathlib import Path

#: A caption that describes another picture: review must put it worst among the scored ones.
WRONG = "a large purple triangle and a small red circle on a black background."


def tagged_folder(folder: Path, *, seed: int, images: int, captioned: int | None = None,
                  wrong: int | None = None) -> Path:
    """Write ``images`` shapes-world PNGs ``0.png``... into ``folder``; the first ``captioned`` (default: all) get
    their true caption as ``<i>.txt``, and image ``wrong`` gets :data:`WRONG` instead. Returns ``folder``."""
    from lib_clipcap.shapes import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        scene = make_scene(seed, i)
        scene.render().save(folder / f"{i}.png")
        if captioned is None or i < captioned:
            (folder / f"{i}.txt").write_text(scene.captions[0], encoding="utf-8")
    if wrong is not None:
        (folder / f"{wrong}.txt").write_text(WRONG, encoding="utf-8")
    return folder
