"""What the benchmarks in tools/ share: the repository on ``sys.path``, the ``--device``/``--dtype`` (and
``--clip``) options, GPU-aware timing, the machine's name for the report, the JSON result file and the Markdown table.

    import _bench_common as common        # first: it puts the repository on sys.path for lib_clipcap
    ap = common.parser(__doc__, clip_help=common.CLIP_HELP)
    args = ap.parse_args()
    device, dtype = common.device_and_dtype(args)
    ...
    common.write_json(args.out, result)
    common.print_table(f"{result['hardware']}; ...", ["batch", "s/img"], [[f"{b}", f"{t:.3f}"] for b, t in rows])
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


CLIP_HELP = "open_clip architecture (ViT-L-14 for the Flickr models)"


def parser(doc: str | None, *, clip_help: str | None = None) -> argparse.ArgumentParser:
    """An argument parser showing ``doc`` as its help, with ``--device`` (default cpu) and ``--dtype`` (fp32); given
    ``clip_help``, also ``--clip`` (the open_clip architecture, default ViT-B-32) with that help."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    if clip_help is not None:
        ap.add_argument("--clip", default="ViT-B-32", help=clip_help)
    return ap


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """The parsed ``--device``/``--dtype``; also seeds torch (random weights are the same in every run)."""
    torch.manual_seed(0)
    return torch.device(args.device), DTYPES[args.dtype]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its core count and torch version."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"


def gpu_mib(value: float | None) -> str:
    """A peak-GPU-memory table cell ("-" without a GPU)."""
    return f"{value:.0f}" if value is not None else "-"


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def print_table(title: str, columns: list[str], rows: Iterable[Iterable[str]]) -> None:
    """Print ``title`` between blank lines, then a Markdown table: ``columns`` as its header, a line a row of cells."""
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
