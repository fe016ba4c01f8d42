#!/usr/bin/env bash
# Run the whole test suite: `bash tools/test.sh [pytest args...]`.
#
# 1. The main suite in .venv (current gradio, pydantic 2, transformers): the library, the standalone app, and the
#    WebUI host double (tests/host) under current gradio. Arguments go to this run.
# 2. Without arguments (or with CLIPCAP_HOST_ENVS=1): tests/host again under A1111's pins (.venv-a1111: gradio 3.41.2,
#    fastapi 0.94, pydantic 1, transformers 4.30.2, open-clip-torch 2.20.0) and under Forge's (.venv-forge: gradio
#    4.40.0, pydantic 2.8.2, transformers 4.46.1), against the A1111 and Forge doubles; then under Forge Neo's pins
#    (.venv-neo: gradio 4.40.0, numpy 2.3.5, pydantic 2.10.6, transformers 4.57.6) against the Neo double and under
#    Forge Classic's (.venv-classic: gradio 3.43.2, pydantic 1.10.22, transformers 4.30.2) against the Classic double.
#    The venvs are built by tools/host_envs.sh (instant once built). CLIPCAP_HOST_ENVS=0 skips them. (The main run
#    covers all four doubles under current gradio.)
# Exits non-zero if any run fails. Each run prints pytest's summary line; the last line adds them up.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
set +e  # env.sh turns on -e; here every run must happen and be counted, whatever the one before did
cd "$ROOT"
bash "$ROOT/tools/system_deps.sh"   # Java (metrics) and Chromium (browser tests), only if missing

LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
status=0
summaries=()

run() {  # $1 = label, $2 = python, rest = pytest args
  local label="$1" py="$2"
  shift 2
  echo "clipcap: pytest ($label)" >&2
  "$py" -m pytest "$@" < /dev/null 2>&1 | tee "$LOGS/$label.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  summaries+=("$label: $(grep -E '^=+ .+ in [0-9.]+s' "$LOGS/$label.log" \
                | tail -1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*//')")
}

run main "$PY" "$@"

if [ "${CLIPCAP_HOST_ENVS:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
  if hosts="$(bash "$ROOT/tools/host_envs.sh")"; then
    while IFS='=' read -r host py; do
      case "$host" in  # which doubles each host's pins run against (conftest.py reads CLIPCAP_HOST_MODES)
        neo|classic) modes="$host" ;;
        *) modes="a1111 forge" ;;
      esac
      [ -n "$host" ] && CLIPCAP_HOST_MODES="$modes" run "host-$host" "$py" tests/host -p no:cacheprovider \
        -W ignore::DeprecationWarning
    done <<< "$hosts"
  else
    echo "clipcap: could not build the host-double virtualenvs (tools/host_envs.sh)" >&2
    status=1
  fi
fi

# Add up the runs: "N passed, N failed, N skipped" (errors count as failed).
total() { printf '%s\n' "${summaries[@]}" | { grep -oE "[0-9]+ $1" || true; } | awk '{s += $1} END {print s + 0}'; }
echo
printf 'clipcap: %s\n' "${summaries[@]}"
failed=$(( $(total failed) + $(total 'errors?') ))
[ "$failed" -eq 0 ] || status=1
echo "total: $(total passed) passed, $failed failed, $(total skipped) skipped"
exit "$status"
