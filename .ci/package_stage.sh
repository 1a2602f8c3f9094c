#!/usr/bin/env bash
# CI stage: the package as a user downloads it.
#
# From a fresh copy of the tree: `python -m build --no-isolation` builds the sdist and then a wheel
# from that sdist (so the sdist must carry every source); the wheel goes into a fresh venv that
# holds torch alone (the op's only requirement besides numpy), where `import fabnet.ops`, one op
# call, `fabnet --version` and `fabnet info` must run; the sdist must not carry a built library.
#
#   PYTHON  the interpreter with torch, setuptools, wheel, ninja and build (stage 1's venv)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python}
work="$(mktemp -d "${TMPDIR:-/tmp}/fabnet-package-stage.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo "CI package stage: $1 at $((SECONDS - start)) s"; }

(cd "$repo" && git ls-files -co --exclude-standard | tar -cf - -T -) | (mkdir "$work/tree" && tar -xf - -C "$work/tree")
(cd "$work/tree" && "$PY" -m build --no-isolation --outdir "$work/dist" . > "$work/build.log" 2>&1) || {
  tail -40 "$work/build.log"
  echo "CI package stage: python -m build --no-isolation failed" >&2
  exit 1
}
sdist=$(ls "$work"/dist/fabnet-*.tar.gz)
wheel=$(ls "$work"/dist/fabnet-*.whl)
step "built $(basename "$sdist") and, from it, $(basename "$wheel")"
tar -tzf "$sdist" > "$work/sdist.txt"
if grep -E '\.so$|_build_info\.json$' "$work/sdist.txt"; then
  echo "CI package stage: the sdist carries a built library or its record" >&2
  exit 1
fi
for needed in csrc/cpu/ops_impl.h csrc/cuda/forward.cu csrc/warp_blend_math.h LICENSE fabnet/py.typed; do
  grep -q "/$needed\$" "$work/sdist.txt" || { echo "CI package stage: the sdist lacks $needed" >&2; exit 1; }
done

torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
"$PY" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/python" -m pip install --quiet "torch==$torch_version"
"$venv/python" -m pip install --quiet "$wheel"
step "wheel installed into a fresh venv with torch $torch_version"
cd "$work"  # not the source tree: the installed package must be the one imported
"$venv/python" - <<'PYEOF'
import importlib.util

import torch

import fabnet.ops as ops

for optional in ("PIL", "tqdm", "matplotlib"):
    assert importlib.util.find_spec(optional) is None, f"{optional} came with the op's install"
sources, flows = torch.rand(2, 3, 3, 9, 8), torch.rand(2, 3, 2, 7, 6) * 2 - 1
got = ops.warp_blend(sources, flows, backend="cpu")
want = ops.warp_blend(sources, flows, backend="reference")
assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
print(f"fabnet.ops from the wheel: {ops.__file__}; CPU kernels {ops.extension.cpu_isa()}; matches the reference")
PYEOF
"$venv/fabnet" --version
"$venv/fabnet" info
step "done"
