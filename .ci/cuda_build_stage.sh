#!/usr/bin/env bash
# CI stage 2: build fabnet the way a GPU user does, on this machine without a GPU.
#
# A fresh venv with the CUDA build of torch 2.14.1 (cu130; C++20 headers), a fresh copy of the
# tree, plain `pip install -e .` with no environment variable set by hand; then
# .ci/check_cuda_build.py (CUDA kernels registered, sm_80 + sm_90 cubins and compute_90 PTX, the
# CUDA backend's reason) and tests/ops under that build. Finally the CPU venv's interpreter is
# pointed at this build, which must be refused by name (built for another torch).
#
#   CPU_PYTHON  the interpreter of stage 1's venv (torch 2.13.0), for the mismatch check
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fabnet-cuda-stage.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo "CI cuda stage: $1 at $((SECONDS - start)) s"; }

python -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet torch==2.14.1
step "torch $("$py" -c 'import torch; print(torch.__version__)') installed"

(cd "$repo" && git ls-files -co --exclude-standard | tar -cf - -T -) | (mkdir "$work/tree" && tar -xf - -C "$work/tree")
cd "$work/tree"
env -u CUDA_HOME -u CUDA_PATH -u TORCH_CUDA_ARCH_LIST -u FABNET_FORCE_CUDA \
  "$py" -m pip install -e . 2>&1 | grep -E "fabnet setup|Successfully|error" | sort -u
step "pip install -e . done"

cuobjdump="$("$py" -c 'import triton, os; print(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))')"
"$py" "$repo/.ci/check_cuda_build.py" "$cuobjdump"
step "build checked"

"$py" -m pip install --quiet pytest==9.0.3 pytest-benchmark==5.2.3
rc=0
"$py" -m pytest tests/ops -q -p no:cacheprovider || rc=$?
if [ "$rc" -eq 5 ]; then echo "CI cuda stage: tests/ops collected no tests" >&2; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"
step "tests/ops passed under the CUDA build"

if [ -n "${CPU_PYTHON:-}" ]; then
  message="$(cd "$work/tree" && "$CPU_PYTHON" -W always -c 'import fabnet.ops as o; print(o.backends()["cpu"][0])' 2>/dev/null)"
  echo "CPU venv on this build: $message"
  case "$message" in
    *"was built for torch 2.14.1"*"pip install -e ."*) ;;
    *) echo "CI cuda stage: a _C built for another torch was not named" >&2; exit 1 ;;
  esac
fi
step "done"
