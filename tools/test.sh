#!/usr/bin/env bash
# Run the whole test suite: `bash tools/test.sh [pytest args...]`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
