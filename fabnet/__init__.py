"""fabnet: FAb-Net, the self-supervised facial-attribute embedding, with a fused warp/blend/L1 kernel.

Subpackages:
    fabnet.ops     the fused ``warp_blend`` / ``warp_blend_l1`` op and its backends
    fabnet.data    synthetic face tracks, the frame-folder layout, DALI and PIL loaders
    fabnet.model   encoder, flow and confidence decoders, the FAb-Net module
    fabnet.train   the training loop, curriculum and checkpoints
    fabnet.probe   linear probes, retrieval, baselines and the end-to-end demo
"""

__version__ = "0.1.0"
