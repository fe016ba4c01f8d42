"""What the batch-tagging tests share: folders of small shapes-world PNGs to tag, and torch held to one thread while a
module's tests run (the CI machine has 2 cores shared with other jobs; two OpenMP threads fighting for them make the
tiny demo model ~20x slower than one thread)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


def shapes_pngs(folder: Path, n: int, *, seed: int, prefix: str = "") -> list[Path]:
    """Write ``n`` 64-pixel shapes-world scenes of ``seed`` into ``folder`` (made if missing) as ``<prefix>00.png``,
    ``<prefix>01.png``...; returns their paths in that order."""
    from lib_clipcap import shapes

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, scene in enumerate(shapes.make_scenes(seed, n)):
        path = folder / f"{prefix}{i:02d}.png"
        scene.render(64).save(path)
        out.append(path)
    return out


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch.set_num_threads(1) for the block; the number it had is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
