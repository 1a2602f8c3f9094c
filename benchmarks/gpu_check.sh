#!/usr/bin/env bash
# The GPU check: one command for a machine with a CUDA GPU and no network, under one deadline.
#
#   bash benchmarks/gpu_check.sh     # report in gpu_check/report.md (GPU_CHECK_OUT to change)
#   GPU_CHECK_STEPS="build bench" GPU_CHECK_BENCH_SECTIONS="kernels op" bash benchmarks/gpu_check.sh
#
# 1. build: fabnet._C with CUDA kernels for the GPU present only (its compute capability from
#    torch; MAX_JOBS = the machine's cores; no build isolation, no downloads); the build time;
# 2. tests: pytest -m gpu tests (the parity suite on cuda and triton in all four dtypes, forward
#    and every gradient; the deterministic gradient; opcheck; torch.compile(fullgraph=True) on
#    CUDA; the drop-in on CUDA), in parallel (pytest -n);
# 3. bench: python -m benchmarks.gpu_bench (the op, the drop-in, the deterministic path, the
#    training step, parity on the bench's own inputs; GB/s against the copy bandwidth);
# 4. demo: fabnet demo --quick --device cuda end to end (the PIL loader);
# 5. report.md: device, versions, command, each step's exit code and time, the tables.
#
# Every step runs under its own time box, and all of them under GPU_CHECK_DEADLINE seconds
# (default 520: with a machine's start-up of 1-2 min, a call stays inside 11 minutes). A step
# that hangs or fails costs its box, not the report. $GPU_CHECK_OUT ends up with 8 files at most: report.md,
# build.log, tests.log, bench.log, bench.json, bench.md, demo.log, demo_report.md.
# Without a GPU it says so and exits 3, before building anything.
set -uo pipefail
cd "$(dirname "$0")/.."
# The checkout itself on the path: the steps import it whether pip's editable install or the
# in-place build made the library.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-gpu_check}
DEADLINE=${GPU_CHECK_DEADLINE:-520}
STEPS=${GPU_CHECK_STEPS:-build tests bench demo}      # a rerun can leave steps out
BENCH_SECTIONS=${GPU_CHECK_BENCH_SECTIONS:-}           # empty: gpu_bench's default order

"$PY" - <<'PYEOF' || exit 3
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda}: "
             "torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU")
PYEOF

mkdir -p "$OUT"
start=$SECONDS
declare -a SUMMARY=()
# box SECONDS: the step's own limit, cut to what the deadline leaves (30 s kept for the report).
box() {
  local left=$((DEADLINE - (SECONDS - start) - 30))
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
# run_step NAME LIMIT LOG COMMAND...: the command under its box; its exit code and time recorded.
run_step() {
  local name=$1 limit log=$3 t0=$SECONDS rc
  limit=$(box "$2")
  shift 3
  if [ "$limit" -le 5 ]; then
    SUMMARY+=("| $name | not run | deadline of ${DEADLINE} s reached |")
    echo "gpu_check: $name not run, the deadline is reached" | tee -a "$log"
    return 124
  fi
  timeout -k 10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  local why=""
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why=" (stopped at its ${limit} s box)"
  SUMMARY+=("| $name | $rc$why | $((SECONDS - t0)) s |")
  echo "gpu_check: $name exit $rc$why after $((SECONDS - t0)) s (at $((SECONDS - start)) s)"
  return "$rc"
}

ARCH=$("$PY" -c "import torch; print('{}.{}'.format(*torch.cuda.get_device_capability(0)))")
JOBS=$(nproc)
wants() { [[ " $STEPS " == *" $1 "* ]]; }
build_ok=1
wants build && run_step "build (sm_${ARCH/./}, MAX_JOBS=$JOBS)" 180 "$OUT/build.log" \
  env FABNET_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" \
  "$PY" -m pip install --no-build-isolation --no-deps -v -e . || build_ok=0
if wants build && [ "$build_ok" -eq 0 ]; then
  # An old pip or setuptools without editable wheels: build the library in place instead.
  tail -30 "$OUT/build.log"
  mv "$OUT/build.log" "$OUT/build_pip.log.txt"
  run_step "build in place (setup.py build_ext --inplace)" 240 "$OUT/build.log" \
    env FABNET_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" "$PY" setup.py build_ext --inplace
  cat "$OUT/build_pip.log.txt" >> "$OUT/build.log" && rm -f "$OUT/build_pip.log.txt"
fi
BACKENDS=$("$PY" -c "from fabnet import ops; print({k: v or 'ok' for k, v in ops.backends().items()})" 2>&1 | tail -1)

# Test workers: one per core, at most 16. The suite is bound by Triton's compilation on the CPU
# (8 workers had not finished its 576 tests in 130 s on the H200 machine's 16 cores); each worker
# holds a CUDA context of ~500 MiB. -v prints each result as it comes, so a run stopped at its
# box still names every failure so far.
WORKERS=$((JOBS > 16 ? 16 : JOBS))
wants tests && run_step "tests (pytest -m gpu tests -n $WORKERS)" 210 "$OUT/tests.log" \
  "$PY" -m pytest -m gpu tests -v -p no:cacheprovider -n "$WORKERS" --tb=short -ra
# shellcheck disable=SC2086  # BENCH_SECTIONS is a list of words
wants bench && run_step "bench (python -m benchmarks.gpu_bench)" 240 "$OUT/bench.log" \
  env PYTHONUNBUFFERED=1 "$PY" -m benchmarks.gpu_bench --out "$OUT" --deadline "$(($(box 240) - 25))" \
  ${BENCH_SECTIONS:+--sections $BENCH_SECTIONS}
demo_dir=$(mktemp -d "${TMPDIR:-/tmp}/fabnet-gpu-demo.XXXXXX")
wants demo && run_step "demo (fabnet demo --quick --device cuda)" 100 "$OUT/demo.log" \
  "$PY" -m fabnet.cli demo --quick --device cuda --no-progress --workers "$JOBS" --out "$demo_dir"
[ -f "$demo_dir/report.md" ] && cp "$demo_dir/report.md" "$OUT/demo_report.md"

{
  echo "# GPU check"
  echo
  "$PY" -c "import datetime, torch; print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, ' + torch.cuda.get_device_name(0) + f', compute capability {torch.cuda.get_device_capability(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}')"
  "$PY" -c "import triton; print(f'triton {triton.__version__}')" 2>/dev/null || echo "triton: not installed"
  echo "$(nproc) CPU cores; backends after the build: $BACKENDS"
  echo
  echo "Command: \`bash benchmarks/gpu_check.sh\` (deadline ${DEADLINE} s); wall time $((SECONDS - start)) s"
  echo
  echo "| step | exit | time |"
  echo "|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  echo "Tests: $(grep -E '(passed|failed|error|skipped)' "$OUT/tests.log" 2>/dev/null | tail -1)"
  grep -E "(FAILED|ERROR) " "$OUT/tests.log" 2>/dev/null | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //' | sort -u | head -60
  echo
  if [ -s "$OUT/bench.md" ]; then cat "$OUT/bench.md"; else echo "no bench table (log: $OUT/bench.log)"; fi
  echo
  echo "Demo: $(grep -E 'done in|wrote|report' "$OUT/demo.log" 2>/dev/null | tail -2)"
} > "$OUT/report.md"
cat "$OUT/report.md"
echo "gpu_check: done at $((SECONDS - start)) s"
