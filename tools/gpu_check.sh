#!/usr/bin/env bash
# The prepared GPU check: every CUDA-only test and the GPU benchmarks in one run on one GPU (the step time limits add up
# to 7 min 40 s), written to one report.
#
#   bash tools/gpu_check.sh [--out DIR] [--python PY] [--quick] [--skip-tests] [--skip-bench] [--dry-run]
#
# Steps, each under its own time limit (a step that overruns is stopped and reported, the others still run):
#   tests      pytest -m cuda: fp16 inference, AMP training, GPU memory given back after unload, the A1111 GPU
#              etiquette with a real model (tests/test_cuda.py, tests/host/test_webui_gpu_etiquette.py). A CUDA test
#              that is skipped on the GPU machine fails the check.
#   core       tools/bench_core.py: our decoder vs the original loop, fp16, batch 1/16/64, peak GPU memory.
#   batch      tools/bench_batch.py: batch tagging end to end from JPEG files, ViT-L/14-sized random weights, fp16.
#   latency    tools/bench_latency.py: single-image warm latency from a JPEG, ViT-L/14-sized, fp16, peak GPU memory.
#
# Writes DIR/report.md (default: artifacts/gpu_check/) with the machine, each step's command, status, time and
# result tables, plus each step's full log and the benchmarks' JSON. Exit status: 0 all steps passed; 1 a step failed
# or timed out; 2 no CUDA GPU (nothing is run); 64 bad arguments.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/artifacts/gpu_check"
PY=""
QUICK=0
RUN_TESTS=1
RUN_BENCH=1
DRY_RUN=0

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die_usage() {
  echo "gpu_check: $1" >&2
  echo "usage: bash tools/gpu_check.sh [--out DIR] [--python PY] [--quick] [--skip-tests] [--skip-bench] [--dry-run]" >&2
  exit 64
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] && [ -n "$2" ] || die_usage "--out needs a folder"; OUT="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] && [ -n "$2" ] || die_usage "--python needs an interpreter"; PY="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --skip-tests) RUN_TESTS=0; shift ;;
    --skip-bench) RUN_BENCH=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[ "$RUN_TESTS" = 1 ] || [ "$RUN_BENCH" = 1 ] || die_usage "--skip-tests and --skip-bench together leave nothing to run"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
fi
[ -n "$PY" ] && command -v "$PY" > /dev/null 2>&1 || die_usage "no Python interpreter found (create .venv with tools/env.sh or pass --python)"
case "$PY$OUT" in *[[:space:]]*) die_usage "paths with spaces are not supported: --python '$PY', --out '$OUT'" ;; esac

# Sizes: the defaults fit 8 minutes on one recent GPU with room to spare; --quick is a smoke run.
if [ "$QUICK" = 1 ]; then
  CORE_ARGS=(--batch-sizes 1 16 --repeats 2 --original-images 2)
  BATCH_ARGS=(--images 128 --seq-images 8 --original-images 1 --batch-size 64 --repeats 1)
  LATENCY_ARGS=(--calls 5 --warmup 2)
else
  CORE_ARGS=(--batch-sizes 1 16 64 --repeats 3 --original-images 3)
  BATCH_ARGS=(--images 512 --seq-images 16 --original-images 2 --batch-size 128 --repeats 2)
  LATENCY_ARGS=(--calls 20 --warmup 3)
fi
# name|time limit (s)|command (the report shows it as run)
STEPS=()
[ "$RUN_TESTS" = 1 ] && STEPS+=("tests|180|$PY -m pytest -m cuda -rsP -q -p no:cacheprovider tests")
if [ "$RUN_BENCH" = 1 ]; then
  STEPS+=("core|90|$PY tools/bench_core.py --device cuda --dtype fp16 ${CORE_ARGS[*]} --out $OUT/bench_core.json")
  STEPS+=("batch|130|$PY tools/bench_batch.py --device cuda --dtype fp16 --clip ViT-L-14 ${BATCH_ARGS[*]} --out $OUT/bench_batch.json")
  STEPS+=("latency|60|$PY tools/bench_latency.py --device cuda --dtype fp16 --clip ViT-L-14 ${LATENCY_ARGS[*]} --out $OUT/bench_latency.json")
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check: would write $OUT/report.md after these steps (name, time limit, command):"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$s"
    printf '  %-8s %4ss  %s\n' "$name" "$limit" "$cmd"
  done
  exit 0
fi

# No GPU: say so and stop before anything runs (a CPU run of these steps would measure nothing useful).
if ! probe="$("$PY" - 2>&1 <<'EOF'
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"torch cannot be imported with {sys.executable}: {e}")
if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}; "
             "torch.cuda.is_available() is False)")
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}")
EOF
)"; then
  echo "gpu_check: $probe" >&2
  echo "gpu_check: nothing was run. This check needs a machine with an NVIDIA GPU and a CUDA build of torch." >&2
  exit 2
fi

mkdir -p "$OUT"
REPORT="$OUT/report.md"
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
  echo "# GPU check"
  echo
  echo "- when: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$( [ "$QUICK" = 1 ] && echo ', --quick sizes')"
  echo "- GPU: $probe"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  echo
} > "$REPORT"

cd "$ROOT"
failed=0
start=$SECONDS
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<< "$s"
  echo "gpu_check: $name (limit ${limit}s): $cmd" >&2
  log="$OUT/$name.log"
  t0=$SECONDS
  # shellcheck disable=SC2086  # the command is a plain word list built above
  timeout --kill-after=10 "$limit" $cmd > "$log" 2>&1
  rc=$?
  status="ok"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status="TIMED OUT after ${limit} s"
  elif [ "$rc" -ne 0 ]; then
    status="FAILED (exit $rc)"
  elif [ "$name" = tests ]; then
    # On a GPU machine a CUDA test must run: a skip means its own condition is wrong.
    if grep -q "SKIPPED" "$log"; then status="FAILED (a CUDA test was skipped on a GPU machine)"; fi
    if ! grep -qE "[0-9]+ passed" "$log"; then status="FAILED (no CUDA test ran)"; fi
  fi
  [ "$status" = ok ] || failed=1
  {
    echo "## $name: $status ($((SECONDS - t0)) s)"
    echo
    echo "\`$cmd\`"
    echo
    if [ "$name" = tests ]; then
      echo '```text'
      grep -E "passed|failed|error|SKIPPED|GPU memory allocated" "$log" | tail -n 20
      echo '```'
    else
      grep -E '^\|' "$log" || true
      echo
      grep -E '^(peak|.*; .*medians|.*one [0-9]+x[0-9]+ JPEG)' "$log" | tail -n 3 || true
    fi
    if [ "$status" != ok ]; then
      echo
      echo '```text'
      tail -n 25 "$log"
      echo '```'
    fi
    echo
  } >> "$REPORT"
  echo "gpu_check: $name: $status" >&2
done
echo "Total: $((SECONDS - start)) s. Full logs and JSON results are next to this file." >> "$REPORT"
echo "gpu_check: report in $REPORT ($((SECONDS - start)) s)" >&2
exit "$failed"
