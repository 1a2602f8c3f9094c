#!/usr/bin/env bash
# Sets fabnet up on a fresh machine: pinned dependencies, then the C++ extension (CPU kernels, plus
# the CUDA kernels when torch has CUDA and nvcc is found).
#
#   FABNET_TORCH   the torch requirement (default torch==2.13.0; on this project's CPU machines a
#                  local CPU wheel satisfies it without pulling CUDA packages)
#   PYTHON         the interpreter to install into (default: python)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
TORCH_REQUIREMENT=${FABNET_TORCH:-torch==2.13.0}

"$PYTHON" -m pip install --quiet "$TORCH_REQUIREMENT"
"$PYTHON" -m pip install --quiet -r requirements.txt
# The extension compiles against the torch installed above (setup.py finds it from pip's build
# environment too); its one line of what it built shows with -v.
"$PYTHON" -m pip install --quiet --no-deps -e .
"$PYTHON" -c "import fabnet.ops as o; print('fabnet installed; warp_blend backends:', {k: (v or 'ok') for k, v in o.backends().items()})"
