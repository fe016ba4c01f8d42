#!/usr/bin/env bash
# Caption images with the default model: `bash tools/run.sh [IMAGES_OR_FOLDERS...] [options]`.
# With no arguments it captions the bundled samples; offline and without weights it falls back to the demo model.
# Any `python -m lib_clipcap caption` option works here (see `bash tools/run.sh --help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m lib_clipcap caption "$@"
