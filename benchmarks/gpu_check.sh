#!/usr/bin/env bash
# The GPU check: one command for a machine with a CUDA GPU and no network.
#
#   bash benchmarks/gpu_check.sh            # writes gpu_check/report.md (GPU_CHECK_OUT to change)
#
# 1. builds fabnet._C with its CUDA kernels (FABNET_FORCE_CUDA=1, no build isolation: offline);
# 2. runs the GPU tests (pytest -m gpu tests/ops: test_parity.py's cuda and triton parity in
#    fp32 / bf16 / fp16 / fp64, forward and every gradient, layouts, the zero-upstream skip;
#    test_gpu.py's determinism, opcheck, torch.compile(fullgraph=True));
# 3. runs the op benchmarks at (8, 3, 3, 128, 128) and (32, 3, 3, 256, 256) in fp32 and bf16
#    (cuda, triton, eager reference, torch.compile(reference); GB/s against the measured copy
#    bandwidth) and the training step at S = 256, B = 32, K = 3 (fused op against the reference);
# 4. prints one markdown report (device, versions, command, test summary, the table).
# Budget: under 8 minutes on an H100 / H200. Without a GPU it says so and exits 3.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-gpu_check}

"$PY" - <<'PYEOF' || exit 3
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda}: "
             "torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU")
PYEOF

mkdir -p "$OUT"
start=$SECONDS
step() { echo "gpu_check: $1 at $((SECONDS - start)) s"; }
if ! FABNET_FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -q -e . > "$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"
  echo "gpu_check: the build failed (log: $OUT/build.log)" >&2
  exit 1
fi
step "built"
timeout 300 "$PY" -m pytest -m gpu tests/ops -q -p no:cacheprovider > "$OUT/tests.log" 2>&1
tests_rc=$?
step "GPU tests done (exit $tests_rc)"
timeout 300 "$PY" -m pytest benchmarks/bench_warp_blend.py benchmarks/bench_train_step.py --benchmark-only -q \
  -p no:cacheprovider --benchmark-json="$OUT/bench.json" > "$OUT/bench.log" 2>&1
bench_rc=$?
step "benchmarks done (exit $bench_rc)"

{
  echo "# GPU check"
  echo
  "$PY" -c "import datetime, torch; print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, ' + torch.cuda.get_device_name(0) + f', compute capability {torch.cuda.get_device_capability(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}')"
  "$PY" -c "import triton; print(f'triton {triton.__version__}')" 2>/dev/null || echo "triton: not installed"
  echo
  echo "Command: \`bash benchmarks/gpu_check.sh\`"
  echo
  echo "Tests (pytest -m gpu tests/ops): $(tail -1 "$OUT/tests.log")"
  echo
  if [ -s "$OUT/bench.json" ]; then "$PY" benchmarks/gpu_report.py "$OUT/bench.json"; else echo "no benchmark results (log: $OUT/bench.log)"; fi
} > "$OUT/report.md"
cat "$OUT/report.md"
step "done"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
