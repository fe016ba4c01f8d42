"""``ast.parse`` for the tests that read the code base's own source (layers, import graph, hygiene).

CPython 3.11 can raise a spurious ``SystemError: AST constructor recursion depth mismatch`` from ``ast.parse`` when
something else ran in the middle of the AST construction and left the thread's recursion bookkeeping off
(python/cpython issue 106905; seen in threaded programs and under pytest). A full CI run here hit it once, in
tests/test_repo_hygiene.py, after the Ray tests. So each parse runs in a fresh thread (clean bookkeeping) and is
retried when that error comes anyway: whether a file parses depends only on its source.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

_TRIES = 3


def _parse_in_thread(text: str, filename: str) -> ast.Module:
    out: dict[str, object] = {}

    def work() -> None:
        try:
            out["tree"] = ast.parse(text, filename=filename)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = e

    t = threading.Thread(target=work, name="ast-parse")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["tree"]  # type: ignore[return-value]


def parse_file(path: Path) -> ast.Module:
    """The AST of the Python file ``path`` (see the module docstring for why not plain ``ast.parse``).

    Raises:
        SyntaxError: the file does not parse (a real error, never retried).
    """
    text = Path(path).read_text(encoding="utf-8")
    for attempt in range(_TRIES):
        try:
            return _parse_in_thread(text, str(path))
        except SystemError as e:
            if "recursion depth mismatch" not in str(e) or attempt == _TRIES - 1:
                raise
    raise AssertionError("unreachable")
