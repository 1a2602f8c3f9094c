"""fabnet: FAb-Net, the self-supervised facial-attribute embedding, with a fused warp/blend/L1 op.

Subpackages:
    fabnet.ops     the fused ``warp_blend`` / ``warp_blend_l1`` op, ``grid_sample`` and their backends
    fabnet.data    synthetic face tracks, the frame-folder layout, DALI and PIL loaders, videos
    fabnet.model   encoder, flow and confidence decoders, the FAb-Net module, checkpoints
    fabnet.train   the training loop, curriculum, run directories and the baseline encoders
    fabnet.probe   linear probes, metrics, intervals, retrieval, confidence and swap studies
    fabnet.demo    ``fabnet demo`` and ``fabnet study``: data, runs, figures and reports

``fabnet.ops`` needs torch alone; the rest needs the ``train`` extra (``pip install
"fabnet[train]"``). ``fabnet info`` prints what is installed and which backends can run.
"""

__version__ = "0.2.0"
