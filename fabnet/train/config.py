"""What a training run is asked to do (``TrainConfig``), what it returns (``TrainResult``), and the
checks of both against the data before any work starts."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field

from fabnet.model import DEFAULT_WIDTH, check_size, check_width
from fabnet.model.fabnet import CONFIDENCE_RANGE, PAPER_CONFIDENCE_RANGE

# The paper's optimisation and initialisation (``fabnet train --paper``). The defaults differ:
# with SGD at 1e-3 and a random last decoder conv, the demo's warp beat not warping only after
# ~800 steps and ended 15 % below it; Adam at 2e-4 from the identity warp reached 21 % in 2000.
PAPER = dict(
    optimizer="sgd",
    lr=1e-3,
    momentum=0.9,
    weight_decay=0.0,
    identity_init=False,
    confidence_range=PAPER_CONFIDENCE_RANGE,
)


@dataclass
class TrainConfig:
    """Everything a run depends on (saved as RUN/config.json and in every checkpoint).

    data, out: data root (ROOT/<identity>/<video>/<track>/<frame>.jpg) and run directory.
    size: frame side, a power of two in [32, 256] (paper: 256). num_sources: K (stage 1: 1).
    width: network width, channels after the encoder's first conv (pix2pix: 64; the authors'
        release: 16, about 4x faster on a CPU; see fabnet.model.networks).
    batch_size: per rank; None = the paper's 32 with the curriculum, 8 without.
    steps / epochs: length of the run (optimiser steps, or passes over the training plan); with
        neither, 1000 steps. epoch_length: samples per epoch (None: one per training track).
    curriculum: the sorted-loss window curriculum; patience: validation rounds without
        improvement that make a plateau (curriculum shift, then LR / 10).
    optimizer, lr, momentum, weight_decay: "adam" (betas 0.9 / 0.999, momentum unused) at 2e-4
        without weight decay by default; the paper's is "sgd" at 1e-3, momentum 0.9 (``PAPER``).
        lr_factor: the plateau LR factor.
    identity_init: decoders' last conv at 0.01 of its random initialisation (the warp starts near
        the identity, confidences near equal; fabnet.model.fabnet.NEAR_IDENTITY_SCALE); the
        paper's is the plain random one. confidence_range: the logits' bound r (8; paper: 1), see
        fabnet.model.fabnet.
    init: checkpoint to start from (encoder + flow decoder; confidence decoder when it has one).
    freeze_flow_decoder: do not train the flow decoder (the release's K-source stage).
    resume: continue RUN/checkpoints/last.pt (or the checkpoint path given).
    overwrite: replace the run already in ``out`` (without it such a run is refused unless
        resumed), or, with ``resume``, rewind it to an earlier checkpoint of its own.
    val_every, val_batches: validation period (steps) and size (batches per rank).
    val_at_start: validate once before the first step of a new run (the curve's starting point).
    checkpoint_every, log_every, figure_every: periods in steps (0: never, except at the end).
    figures: False writes no PNG at all (each costs a matplotlib render; tests and sweeps skip it).
    tensorboard: also write TensorBoard event files to RUN/tensorboard (fabnet.train.tensorboard).
    device: "auto", "cpu", "cuda", "cuda:1"; data_backend: "pil", "dali" or "auto".
    op_backend: the fused op's backend ("auto", "cpu", "cuda", "triton", "reference").
    channels_last, bf16: GPU speed options (bf16 autocast of the convolutions).
    stop_after: stop (with a checkpoint, as on SIGTERM) after this many steps of this process;
        for tests and time-boxed jobs. progress: the tqdm bar.
    """

    data: str
    out: str
    size: int = 256
    num_sources: int = 1
    width: int = DEFAULT_WIDTH
    batch_size: int | None = None
    steps: int | None = None
    epochs: int | None = None
    epoch_length: int | None = None
    curriculum: bool = False
    patience: int = 2
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_factor: float = 0.1
    optimizer: str = "adam"
    identity_init: bool = True
    confidence_range: float = CONFIDENCE_RANGE
    init: str | None = None
    freeze_flow_decoder: bool = False
    resume: bool | str = False
    overwrite: bool = False
    seed: int = 0
    val_every: int = 100
    val_batches: int = 4
    val_at_start: bool = True
    checkpoint_every: int = 100
    log_every: int = 10
    figure_every: int = 500
    figure_samples: int = 4
    figures: bool = True
    tensorboard: bool = True
    device: str = "auto"
    data_backend: str = "auto"
    num_workers: int = 2
    op_backend: str = "auto"
    channels_last: bool = False
    bf16: bool = False
    stop_after: int | None = None
    progress: bool = True

    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else (32 if self.curriculum else 8)


@dataclass
class TrainResult:
    """checkpoint: path of the final checkpoint (RUN/checkpoints/last.pt). best_val: best
    validation loss (inf without validation). metrics: every record written to metrics.jsonl
    (this process's). step: optimiser steps done. interrupted: stopped by a signal or stop_after.
    checksums: per-rank digests of every parameter's bytes at the end (equal when the ranks are
    in sync; see ``distributed.parameter_checksums``)."""

    checkpoint: str
    best_val: float
    metrics: list = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    interrupted: bool = False
    stop_reason: str | None = None
    run_dir: str = ""
    best_checkpoint: str | None = None
    checksums: list = field(default_factory=list)


def check_config(cfg: TrainConfig) -> None:
    check_size(cfg.size, "--size")
    check_width(cfg.width, "--width")
    if int(cfg.num_sources) != cfg.num_sources or cfg.num_sources < 1:
        raise ValueError(f"--sources must be an integer >= 1; got {cfg.num_sources!r}")
    if cfg.steps is not None and cfg.epochs is not None:
        raise ValueError(f"give --steps or --epochs, not both (got --steps {cfg.steps}, --epochs {cfg.epochs})")
    for name in ("steps", "epochs", "batch_size", "val_every", "val_batches", "patience", "epoch_length"):
        v = getattr(cfg, name)
        if v is not None and (int(v) != v or v < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1; got {v!r}")
    if cfg.batch_size is not None and cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (BatchNorm needs two samples); got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise ValueError(f"--lr must be > 0; got {cfg.lr!r}")
    if cfg.freeze_flow_decoder and cfg.init is None and not cfg.resume:
        raise ValueError("--freeze-flow-decoder needs --init CKPT (a trained flow decoder to keep fixed)")
    check_writable(cfg.out)


def check_writable(out: str) -> None:
    """ValueError before any work when the run directory cannot be made or written to."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(
            f"--out {out!r} is not writable ({err.strerror or err}); choose another run directory"
        ) from None


def check_data(cfg: TrainConfig) -> None:
    """Clear errors before any loader starts: a missing root, tracks too short for K."""
    if not os.path.isdir(cfg.data):
        raise FileNotFoundError(
            f"--data {cfg.data!r} does not exist or is not a directory; expected "
            f"ROOT/<identity>/<video>/<track>/<frame>.jpg (make a synthetic one with "
            f"`fabnet synth {cfg.data}`)"
        )
    from fabnet.data.index import group_tracks, load_index

    everything = load_index(cfg.data)
    for split in ("train", "val"):
        records = [r for r in everything if r.split == split]
        if not records:
            identities = len({r.identity for r in everything})
            raise ValueError(
                f"--data {cfg.data!r} has no {split} frames: its {identities} identities are split by "
                "identity 75/15/10 into train/val/test, which needs at least 3 identities, or a split "
                "column in labels.csv naming train and val frames"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracks = group_tracks(records, 1)
        longest = max((len(t) for t in tracks), default=0)
        if longest < cfg.num_sources + 1:
            raise ValueError(
                f"--sources {cfg.num_sources} needs tracks of at least {cfg.num_sources + 1} frames "
                f"(K sources + 1 target), but the longest {split} track under --data {cfg.data!r} "
                f"has {longest}; lower --sources or use longer tracks"
            )
