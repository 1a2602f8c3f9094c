"""The FAb-Net training loop: ``train(TrainConfig(...)) -> TrainResult``.

One step: a batch of (target, K sources) -> per-sample L1 from one fused ``warp_blend_l1`` call
-> the curriculum's window mean (or the plain mean) -> backward -> SGD. Every ``val_every`` steps
the validation L1 (whole batches, eval-mode BatchNorm) feeds the curriculum's plateau counter and,
once the curriculum has finished (or without one), ``ReduceLROnPlateau``.

Files under ``out``:
    config.json               the TrainConfig
    metrics.jsonl             one JSON object per logged train step ("kind": "train"), per
                              validation ("kind": "val"; step 0: before training, with the
                              zero-flow loss), and "init", "resume", "interrupt", "end"; rank 0 only
    checkpoints/last.pt       every ``checkpoint_every`` steps, at the end and on SIGINT/SIGTERM
    checkpoints/best.pt       the best validation loss
    figures/loss.png          loss curves with curriculum shifts marked
    figures/samples_XXXXXX.png  validation samples: target, sources, confidences, generated

Resuming (``resume=True``) restores model, optimiser, scheduler, curriculum, RNG states and the
data position (epoch and batches consumed of it: the loader's plan is a function of seed and
epoch, so the order continues exactly).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from fabnet import ops
from fabnet.data.bad_frames import TooManyBadFrames
from fabnet.model import (
    DEFAULT_WIDTH,
    OP_KWARGS,
    FabNet,
    check_compatible,
    check_size,
    check_width,
    init_from,
    load_checkpoint,
    save_checkpoint,
)
from fabnet.model.checkpoint import FORMAT
from fabnet.train import distributed as D
from fabnet.train.curriculum import Curriculum


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
    lr, momentum, weight_decay: SGD (paper: 1e-3, 0.9, 0). lr_factor: the plateau LR factor.
    optimizer: "sgd" (the paper's) or "adam" (betas 0.9 / 0.999; momentum unused), for short runs.
    init: checkpoint to start from (encoder + flow decoder; confidence decoder when it has one).
    freeze_flow_decoder: do not train the flow decoder (the release's K-source stage).
    resume: continue RUN/checkpoints/last.pt (or the checkpoint path given).
    val_every, val_batches: validation period (steps) and size (batches per rank).
    val_at_start: validate once before the first step of a new run (the curve's starting point).
    checkpoint_every, log_every, figure_every: periods in steps (0: never, except at the end).
    figures: False writes no PNG at all (each costs a matplotlib render; tests and sweeps skip it).
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
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_factor: float = 0.1
    optimizer: str = "sgd"
    init: str | None = None
    freeze_flow_decoder: bool = False
    resume: bool | str = False
    seed: int = 0
    val_every: int = 100
    val_batches: int = 4
    val_at_start: bool = True
    checkpoint_every: int = 100
    log_every: int = 10
    figure_every: int = 500
    figure_samples: int = 4
    figures: bool = True
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


# ------------------------------------------------------------------------------------------------
# checks and data


def _check_config(cfg: TrainConfig) -> None:
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
    _check_writable(cfg.out)


def _check_writable(out: str) -> None:
    """ValueError before any work when the run directory cannot be made or written to."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(
            f"--out {out!r} is not writable ({err.strerror or err}); choose another run directory"
        ) from None


def _check_data(cfg: TrainConfig) -> None:
    """Clear errors before any loader starts: a missing root, tracks too short for K."""
    if not os.path.isdir(cfg.data):
        raise FileNotFoundError(
            f"--data {cfg.data!r} does not exist or is not a directory; expected "
            f"ROOT/<identity>/<video>/<track>/<frame>.jpg (make a synthetic one with "
            f"`fabnet synth {cfg.data}`)"
        )
    import warnings

    from fabnet.data.index import group_tracks, load_index

    for split in ("train", "val"):
        records = load_index(cfg.data, split)
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


def _make_loader(cfg: TrainConfig, split: str, world: D.World, batch_size: int):
    from fabnet.data import make_loader

    train = split == "train"
    kwargs = dict(
        split=split,
        batch_size=batch_size,
        num_sources=cfg.num_sources,
        size=cfg.size,
        backend=cfg.data_backend,
        seed=cfg.seed,
        shard_id=world.rank,
        num_shards=world.size,
        device=str(world.device),
        num_workers=cfg.num_workers,
    )
    if train and cfg.epoch_length is not None:
        kwargs["epoch_length"] = cfg.epoch_length
    return make_loader(cfg.data, **kwargs)


def _epoch_batches(loader, epoch: int, skip: int):
    """Iterator over the batches of ``epoch`` after the first ``skip`` (the resumed data position).

    The loader's plan of an epoch is a function of (seed, epoch), so the batches after ``skip``
    are exactly those the interrupted run would have read next. ``FrameLoader.iter_from`` slices
    the plan before any file is opened; a loader without it reads and drops ``skip`` batches.
    """
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    if skip and hasattr(loader, "iter_from"):
        return iter(loader.iter_from(skip))
    it = iter(loader)
    for _ in range(skip):  # a loader without random access: read and drop
        next(it)
    return it


def plateau_step(curriculum: Curriculum, scheduler, optimizer, val_loss: float, step: int) -> dict:
    """One validation round of the schedule: the curriculum sees ``val_loss`` first (a plateau
    shifts its window); the learning-rate scheduler (``ReduceLROnPlateau``) sees it only when the
    curriculum had already finished before this round (or there is none), so the LR stays at its
    start value through every window and begins to fall only at 40-90%.

    Returns the curriculum's record (improved, plateau, shifted, bad_rounds, window) plus ``lr``
    (after this round) and ``lr_reduced``.
    """
    finished_before = curriculum.finished
    info = curriculum.observe(val_loss, step)
    lr_before = optimizer.param_groups[0]["lr"]
    if finished_before:
        scheduler.step(val_loss)
    lr = optimizer.param_groups[0]["lr"]
    return dict(info, lr=lr, lr_reduced=lr < lr_before, lr_schedule_active=finished_before)


def _check_resume(cfg: TrainConfig, state: dict, path: str, world_size: int) -> None:
    """ValueError when a checkpoint cannot continue this configuration; warnings when the data
    position or the random streams cannot be continued exactly."""
    import warnings

    check_compatible(state, size=cfg.size, num_sources=cfg.num_sources, width=cfg.width, path=path, arg="--resume")
    for key in ("optimizer", "scheduler", "curriculum", "step", "epoch", "batch_in_epoch"):
        if key not in state:
            raise ValueError(
                f"--resume {path!r} holds weights only (no {key!r}); start a new run from it with --init {path}"
            )
    old = state.get("train_config") or {}
    if "curriculum" in old and bool(old["curriculum"]) != bool(cfg.curriculum):
        flag = lambda on: "with --curriculum" if on else "without --curriculum"  # noqa: E731
        raise ValueError(
            f"--resume {path!r} was trained {flag(old['curriculum'])}, but this run is "
            f"{flag(cfg.curriculum)}; pass the same flag, or start a new run with --init {path}"
        )
    if "freeze_flow_decoder" in old and bool(old["freeze_flow_decoder"]) != bool(cfg.freeze_flow_decoder):
        raise ValueError(
            f"--resume {path!r} was trained with freeze_flow_decoder={old['freeze_flow_decoder']}, "
            f"but this run has {cfg.freeze_flow_decoder}; pass the same --freeze-flow-decoder setting"
        )
    changed = [k for k in ("data", "seed", "batch_size", "epoch_length") if k in old and old[k] != getattr(cfg, k)]
    if state.get("world_size", 1) != world_size:
        changed.append(f"world size {state.get('world_size', 1)} -> {world_size}")
    if changed:
        warnings.warn(
            f"--resume {path!r}: {', '.join(changed)} changed since the checkpoint; training continues, "
            "but not on the exact data order (or random streams) of the interrupted run",
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------------
# checkpoints


def _rng_state() -> dict:
    # The numpy state as plain values (name, key as a tensor, position, Gaussian cache): a
    # checkpoint must load with torch.load(weights_only=True), which refuses numpy arrays.
    name, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    return dict(
        torch=torch.get_rng_state(),
        numpy=numpy_state,
        python=random.getstate(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, cached = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)  # older files: an array
    np.random.set_state((name, key.astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss, gradient or weight; nothing non-finite was saved."""


def _non_finite_parameters(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def _check_finite(step: int, losses: torch.Tensor, model: torch.nn.Module, world, last_path: str, lr: float) -> None:
    """NonFiniteError naming ``step`` when a loss or a gradient is NaN or infinite (on any rank)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # One reduction over every gradient: torch._foreach_norm reads each once (0.3 ms of a ~100 ms
    # step at S = 32, width 64, on 2 cores).
    norm = torch.stack(torch._foreach_norm(grads)).sum() if grads else losses.new_zeros(())
    bad_losses = int((~torch.isfinite(losses.detach())).sum())
    bad = bad_losses > 0 or not bool(torch.isfinite(norm))
    if not D.any_rank(world, bad):
        return
    what = (
        f"the loss is not finite for {bad_losses} of {losses.numel()} samples"
        if bad_losses
        else "a gradient is not finite"
    )
    kept = f"the last checkpoint {last_path!r} is kept" if os.path.exists(last_path) else "no checkpoint was written"
    raise NonFiniteError(
        f"step {step}: {what}; training stopped before the update, {kept}. Lower --lr (now "
        f"{lr:g}), or look for non-finite values in the data"
    )


class _Signals:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and stops after the current step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------


def _to_device(batch: dict, device: torch.device):
    target = batch["target"].to(device, non_blocking=True).float()
    sources = batch["sources"].to(device, non_blocking=True).float()
    return target, sources


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl; a line cut off by a crash (disk full, power loss) is dropped
    with a warning, since every record after the resumed checkpoint is written again anyway."""
    records, dropped = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                dropped.append(number)
    if dropped:
        warnings.warn(
            f"{path}: dropped {len(dropped)} unreadable line(s) ({', '.join(map(str, dropped[:5]))}), "
            "cut off when the run stopped; resuming without them",
            stacklevel=3,
        )
    return records


class _Metrics:
    """metrics.jsonl writer (rank 0); on resume, drops records after the checkpoint's step."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        self.records: list[dict] = []
        if enabled and resume_step is not None and os.path.exists(path):
            old = read_metrics(path)
            self.records = [r for r in old if r.get("step", 0) <= resume_step]
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.records)
            os.replace(path + ".tmp", path)
        elif enabled:
            open(path, "w").close()

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def train(config: TrainConfig) -> TrainResult:
    """Train FAb-Net as ``config`` says; returns where the checkpoint is and what was measured.

    Under torchrun (WORLD_SIZE > 1) every rank calls this: DistributedDataParallel, per-rank data
    shards, rank 0 writes files. See the module docstring for the files written.
    """
    cfg = dataclasses.replace(config)
    _check_config(cfg)
    _check_data(cfg)
    world = D.setup(cfg.device)
    try:
        return _train(cfg, world)
    finally:
        D.teardown(world)


def _train(cfg: TrainConfig, world: D.World) -> TrainResult:
    from tqdm import tqdm

    from fabnet.train.figures import loss_curves

    run = os.path.abspath(cfg.out)
    ckpt_dir = os.path.join(run, "checkpoints")
    last_path = os.path.join(ckpt_dir, "last.pt")
    best_path = os.path.join(ckpt_dir, "best.pt")
    batch_size = cfg.resolved_batch_size()

    # -- resume / init -----------------------------------------------------------------------
    resume_state = None
    if cfg.resume:
        path = cfg.resume if isinstance(cfg.resume, str) else last_path
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"--resume: no checkpoint at {path!r} (is --out {cfg.out!r} the run to "
                "continue? drop --resume to start a new run)"
            )
        resume_state = load_checkpoint(path, "cpu")
        _check_resume(cfg, resume_state, path, world.size)

    torch.manual_seed(cfg.seed + world.rank)
    np.random.seed(cfg.seed + world.rank)
    random.seed(cfg.seed + world.rank)

    model = FabNet(
        cfg.size,
        cfg.num_sources,
        width=cfg.width,
        op_backend=cfg.op_backend,
        channels_last=cfg.channels_last,
        autocast_bf16=cfg.bf16,
    )
    init_loaded = []
    if cfg.init is not None and resume_state is None:
        init_state = load_checkpoint(cfg.init, "cpu")
        init_loaded = init_from(model, init_state, path=cfg.init)
    if cfg.freeze_flow_decoder:
        model.flow_decoder.requires_grad_(False)
    model.to(world.device)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.patience - 1, threshold=1e-3
    )
    curriculum = Curriculum(cfg.curriculum, cfg.patience)

    step, epoch, batch_in_epoch, best_val = 0, 0, 0, math.inf
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        curriculum.load_state_dict(resume_state["curriculum"])
        step, epoch = resume_state["step"], resume_state["epoch"]
        batch_in_epoch = resume_state["batch_in_epoch"]
        best_val = resume_state.get("best_val", math.inf)
        if resume_state.get("world_size", 1) == world.size:
            _set_rng_state(resume_state["rng"])

    ddp = model
    if world.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None
        )

    train_loader = _make_loader(cfg, "train", world, batch_size)
    val_loader = _make_loader(cfg, "val", world, batch_size)
    per_epoch = len(train_loader)
    if per_epoch < 1:
        raise ValueError(
            f"--batch-size {batch_size} is larger than the training shard of --data {cfg.data!r}; "
            "lower --batch-size or raise --epoch-length"
        )
    total = cfg.steps if cfg.steps is not None else (cfg.epochs * per_epoch if cfg.epochs else 1000)

    if world.is_main:
        # temporaries of checkpoint writes cut short by SIGKILL (never renamed, never read)
        if os.path.isdir(ckpt_dir):
            for name in os.listdir(ckpt_dir):
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(ckpt_dir, name))
        os.makedirs(os.path.join(run, "figures"), exist_ok=True)
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    metrics = _Metrics(os.path.join(run, "metrics.jsonl"), world.is_main, step if resume_state is not None else None)
    if world.is_main and init_loaded:
        metrics.log(
            dict(
                kind="init",
                step=step,
                path=cfg.init,
                loaded=init_loaded,
                frozen=["flow_decoder"] if cfg.freeze_flow_decoder else [],
            )
        )
    if resume_state is not None:
        # What the run continues from, as restored: a resumed run can be checked against it.
        metrics.log(
            dict(
                kind="resume",
                step=step,
                epoch=epoch,
                batch_in_epoch=batch_in_epoch,
                curriculum=curriculum.state_dict(),
                lr=optimizer.param_groups[0]["lr"],
                best_val=best_val,
                rng_restored=resume_state.get("world_size", 1) == world.size,
            )
        )

    def checkpoint(path: str) -> None:
        if not world.is_main:
            return
        bad = _non_finite_parameters(model)
        if bad:  # the finite-gradient check makes this unreachable but for an update that overflows
            raise NonFiniteError(
                f"step {step}: {len(bad)} parameter tensors are not finite ({', '.join(bad[:3])}, "
                f"...); {path!r} was not overwritten; lower --lr (now "
                f"{optimizer.param_groups[0]['lr']:g})"
            )
        save_checkpoint(
            dict(
                format=FORMAT,
                model_config=model.config(),
                model=model.state_dict(),
                step=step,
                epoch=epoch,
                batch_in_epoch=batch_in_epoch,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                curriculum=curriculum.state_dict(),
                rng=_rng_state(),
                world_size=world.size,
                train_config=dataclasses.asdict(cfg),
                best_val=best_val,
                time=time.time(),
            ),
            path,
        )

    def set_train_mode():
        model.train()
        if cfg.freeze_flow_decoder:
            model.flow_decoder.eval()  # frozen means its BatchNorm statistics too

    @torch.no_grad()
    def validate(zero_flow: bool = False):
        """Mean validation L1 (whole batches, eval-mode BatchNorm); with ``zero_flow`` also the L1
        of the equal-weight blend of the unwarped sources, the bar a learned flow has to beat."""
        model.eval()
        total_loss, total_zero, count = 0.0, 0.0, 0
        for i, batch in enumerate(_epoch_batches(val_loader, 0, 0)):
            if i >= cfg.val_batches:
                break
            target, sources = _to_device(batch, world.device)
            losses = model(target, sources)
            total_loss += float(losses.sum())
            count += losses.numel()
            if zero_flow:
                B, K = sources.shape[:2]
                flows = sources.new_zeros(B, K, 2, cfg.size, cfg.size)
                total_zero += float(
                    ops.warp_blend_l1(sources, flows, None, target, backend=cfg.op_backend, **OP_KWARGS).sum()
                )
        set_train_mode()
        s, z, n = D.all_mean(world, [total_loss, total_zero, float(count)])
        return (s / max(n, 1.0), z / max(n, 1.0)) if zero_flow else s / max(n, 1.0)

    def figures(tag: str) -> None:
        if not (world.is_main and cfg.figures):
            return
        loss_curves(
            metrics.records, os.path.join(run, "figures", "loss.png"), title=f"FAb-Net S={cfg.size} K={cfg.num_sources}"
        )
        _sample_figure(
            model,
            val_loader,
            world.device,
            cfg.figure_samples,
            os.path.join(run, "figures", f"samples_{tag}.png"),
            title=f"step {step}, window {curriculum.window}",
        )
        set_train_mode()

    if cfg.val_at_start and resume_state is None and step == 0:
        # The starting point of the validation curve. It feeds neither the curriculum nor the LR
        # schedule: a plateau is a property of training, and there has been none yet.
        val0, zero_flow = validate(zero_flow=True)
        metrics.log(
            dict(
                kind="val",
                step=0,
                epoch=0,
                val_loss=val0,
                zero_flow_loss=zero_flow,
                best=best_val,
                initial=True,
                window=list(curriculum.window),
                bad_rounds=0,
                improved=False,
                plateau=False,
                shifted=False,
                lr=optimizer.param_groups[0]["lr"],
                lr_reduced=False,
            )
        )
    set_train_mode()
    bar = tqdm(
        total=total,
        initial=step,
        disable=not (cfg.progress and world.is_main),
        unit="step",
        dynamic_ncols=True,
        desc=f"train S={cfg.size} K={cfg.num_sources}",
    )
    interrupted = False
    steps_here = 0
    it = _epoch_batches(train_loader, epoch, batch_in_epoch)
    t_log, samples_log = time.perf_counter(), 0
    try:
        with _Signals() as signals:
            while step < total:
                try:
                    batch = next(it)
                except StopIteration:
                    epoch, batch_in_epoch = epoch + 1, 0
                    it = _epoch_batches(train_loader, epoch, 0)
                    continue
                except Exception:
                    # Ctrl-C reaches the loader's worker processes too; when they die of it, the
                    # checkpoint of the steps done so far is still owed.
                    if signals.received is None:
                        raise
                    interrupted = True
                    break
                target, sources = _to_device(batch, world.device)
                losses = ddp(target, sources)
                loss = curriculum.select(losses)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Before the update: a non-finite loss or gradient stops training with the model
                # (and every checkpoint on disk) as they were after the last finite step.
                _check_finite(step + 1, losses, model, world, last_path, optimizer.param_groups[0]["lr"])
                optimizer.step()
                step += 1
                steps_here += 1
                batch_in_epoch += 1
                samples_log += target.shape[0] * world.size
                bar.update(1)

                if step % cfg.log_every == 0 or step == total:
                    l_win, l_all = D.all_mean(world, [float(loss.detach()), float(losses.detach().mean())])
                    now = time.perf_counter()
                    rate = samples_log / max(now - t_log, 1e-9)
                    t_log, samples_log = now, 0
                    lo, hi = curriculum.window
                    metrics.log(
                        dict(
                            kind="train",
                            step=step,
                            epoch=epoch,
                            loss=l_win,
                            loss_batch=l_all,
                            window=[lo, hi],
                            lr=optimizer.param_groups[0]["lr"],
                            samples_per_s=rate,
                            time=time.time(),
                        )
                    )
                    bar.set_postfix(
                        loss=f"{l_win:.4f}",
                        batch=f"{l_all:.4f}",
                        window=f"{lo:.1f}-{hi:.1f}",
                        rate=f"{rate:.1f}/s",
                        refresh=False,
                    )

                if step % cfg.val_every == 0 or step == total:
                    val = validate()
                    info = plateau_step(curriculum, scheduler, optimizer, val, step)
                    improved_best = val < best_val
                    best_val = min(best_val, val)
                    metrics.log(dict(kind="val", step=step, epoch=epoch, val_loss=val, best=best_val, **info))
                    if world.is_main:
                        shift = f" shift -> {info['window']}" if info["shifted"] else ""
                        bar.write(
                            f"step {step}: val L1 {val:.4f} (best {best_val:.4f}), plateau rounds "
                            f"{info['bad_rounds']}/{cfg.patience}, window {info['window']}{shift}"
                            + (f", lr -> {info['lr']:.2g}" if info["lr_reduced"] else "")
                        )
                    if improved_best:
                        checkpoint(best_path)
                    if cfg.figure_every and step % cfg.figure_every == 0 and step != total:
                        figures(f"{step:06d}")

                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    checkpoint(last_path)
                stop = signals.received is not None or (cfg.stop_after is not None and steps_here >= cfg.stop_after)
                if D.any_rank(world, stop):
                    interrupted = True
                    break
    except TooManyBadFrames as err:
        # The data root changed under the run: keep what was learned, then stop.
        bar.close()
        checkpoint(last_path)
        raise TooManyBadFrames(
            f"step {step}: {err}; checkpoint {last_path!r} written: fix or re-index the "
            "data, then continue with --resume"
        ) from None
    bar.close()
    checkpoint(last_path)
    why = None
    if interrupted:
        why = signal.Signals(signals.received).name if signals.received is not None else "stop_after"
    if world.is_main:
        if interrupted:
            metrics.log(dict(kind="interrupt", step=step, epoch=epoch, reason=why, checkpoint=last_path))
        figures("final" if not interrupted else f"{step:06d}")
    checksums = D.parameter_checksums(model, world)
    metrics.log(
        dict(
            kind="end",
            step=step,
            epoch=epoch,
            best_val=best_val,
            interrupted=interrupted,
            world_size=world.size,
            checksums=checksums,
        )
    )
    D.barrier(world)
    return TrainResult(
        checkpoint=last_path,
        best_val=best_val,
        metrics=metrics.records,
        step=step,
        epoch=epoch,
        interrupted=interrupted,
        stop_reason=why,
        run_dir=run,
        best_checkpoint=best_path if os.path.exists(best_path) else None,
        checksums=checksums,
    )


@torch.no_grad()
def _sample_figure(model: FabNet, loader, device, count: int, path: str, title: str) -> None:
    from fabnet.train.figures import samples_figure

    model.eval()
    batch = next(_epoch_batches(loader, 0, 0))
    target, sources = _to_device(batch, device)
    # Spread over the batch: the validation plan lists a track's identity's tracks together, so
    # the first ``count`` samples would often show one face.
    pick = torch.linspace(0, target.shape[0] - 1, min(count, target.shape[0])).round().long().unique()
    target, sources = target[pick], sources[pick]
    out = model.generate(target, sources)
    lo, hi = _VALUE_RANGE
    scale = lambda x: (x - lo) / (hi - lo)  # noqa: E731
    samples_figure(
        scale(target), scale(sources), out["confidence"], scale(out["generated"]), path, title=title, loss=out["loss"]
    )


_VALUE_RANGE = (0.0, 1.0)  # pixel range of the loader's tensors
