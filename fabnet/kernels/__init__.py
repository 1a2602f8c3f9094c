"""Triton kernels of the fused warp_blend op (warp_blend.py: the launchers and the layout of the work;
forward_kernel.py, backward_kernel.py; sampling.py: their shared steps; launch_config.py: launch sizes).
Imported by fabnet.ops.triton_ops, which registers them as torch ops."""
