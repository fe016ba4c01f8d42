#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) from tools/requirements-dev.txt.
# A second run is instant: it reinstalls only when the requirements file changed (hash stamp).
# Usage: source tools/env.sh   (sets $PY to the venv's python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIPCAP_VENV:-$ROOT/.venv}"
REQ="$ROOT/tools/requirements-dev.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "clipcap: creating virtualenv in $VENV" >&2
  PYTHON_BIN="$(command -v python3.11 || command -v python3)"
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  echo "clipcap: installing dependencies (first run takes a few minutes)" >&2
  # This machine's pip config names local package folders that may not exist; pip warns per package. Drop that noise.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  echo "$want" > "$STAMP"
fi
PY="$VENV/bin/python"
export PY
