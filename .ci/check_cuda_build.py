"""Checks a CUDA build of fabnet._C on a machine without a GPU (the CI's build stage).

    python .ci/check_cuda_build.py CUOBJDUMP

What a GPU user's `pip install -e .` must have produced: the library imports; every fabnet op
with a CPU kernel has a CUDA kernel too (except the CPU-only training path); the binary carries
sm_80 and sm_90 cubins and compute_90 PTX; the CUDA backend says why it cannot serve here.
Exits 1 naming the first check that failed.
"""

from __future__ import annotations

import subprocess
import sys

# CPU-only by design: the fused loss-and-gradient pass of the CPU training path (fabnet.ops.backends).
CPU_ONLY_OPS = {"fabnet::warp_blend_l1_with_grads"}
EXPECTED_CUBINS = {"sm_80", "sm_90"}
EXPECTED_PTX = {"sm_90"}  # cuobjdump names PTX by the arch it was generated for (compute_90)


def fail(message: str) -> None:
    print(f"check_cuda_build: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main(cuobjdump: str) -> None:
    import torch

    import fabnet._C  # noqa: F401
    import fabnet.ops as ops

    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); fabnet._C at {fabnet._C.__file__}")
    ops_with_cpu = sorted(
        name
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("fabnet::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    )
    if not ops_with_cpu:
        fail("no fabnet op has a CPU kernel")
    for name in ops_with_cpu:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
        print(
            f"  {name}: CPU yes, CUDA "
            f"{'yes' if has_cuda else 'no (CPU-only by design)' if name in CPU_ONLY_OPS else 'no'}"
        )
        if not has_cuda and name not in CPU_ONLY_OPS:
            fail(f"{name} has a CPU kernel but no CUDA kernel")

    library = fabnet._C.__file__
    listing = {}
    for kind in ("elf", "ptx"):
        proc = subprocess.run([cuobjdump, f"--list-{kind}", library], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(f"{cuobjdump} --list-{kind} failed: {proc.stderr.strip()}")
        listing[kind] = {
            part for line in proc.stdout.splitlines() for part in line.split(".") if part.startswith("sm_")
        }
        print(f"  {kind}: {sorted(listing[kind])}")
    if not listing["elf"] >= EXPECTED_CUBINS:
        fail(f"cubins {sorted(listing['elf'])} lack {sorted(EXPECTED_CUBINS - listing['elf'])}")
    if not listing["ptx"] >= EXPECTED_PTX:
        fail(f"PTX {sorted(listing['ptx'])} lacks {sorted(EXPECTED_PTX - listing['ptx'])}")

    report = ops.backends()
    print(f"  fabnet.ops.backends(): {report}")
    if torch.cuda.is_available():
        fail("this check is for a machine without a GPU")
    if not report["cuda"]:
        fail("backends()['cuda'] is empty on a machine without a GPU")
    if report["cpu"]:
        fail(f"the CPU backend cannot serve: {report['cpu']}")
    print("check_cuda_build: ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
