"""``python -m lib_clipcap train <trainer> ...``: one subcommand per trainer module.

A trainer module (e.g. :mod:`lib_clipcap.train.grammar`) defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and must import cheaply (heavy imports inside ``run``): ``--help`` imports every module listed
in :data:`TRAINERS`. A listed module that is missing from this build, or that does not define the three names (yet),
is left out, so a trainer appears as soon as its module provides them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

HELP = "train models: " + "|".join(("features", "clipcap", "sbg", "grammar", "rl"))

# subcommand -> module defining HELP, add_arguments(parser), run(args) -> int
TRAINERS: dict[str, str] = {
    "features": "lib_clipcap.train.features",
    "clipcap": "lib_clipcap.train.clipcap",
    "sbg": "lib_clipcap.train.sbg",
    "grammar": "lib_clipcap.train.grammar",
    "rl": "lib_clipcap.train.rl",
}


def available_trainers() -> dict[str, tuple[str, Callable, Callable]]:
    """``name -> (help, add_arguments, run)`` for every trainer module of this build that provides them."""
    found: dict[str, tuple[str, Callable, Callable]] = {}
    for name, module in TRAINERS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # not part of this build
                continue
            raise
        if all(hasattr(mod, a) for a in ("HELP", "add_arguments", "run")):
            found[name] = (mod.HELP, mod.add_arguments, mod.run)
    return found


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for name, (help_, add_args, run_) in available_trainers().items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add_args(sp)
        sp.set_defaults(_train_run=run_)


def run(args: argparse.Namespace) -> int:
    return int(args._train_run(args) or 0)
