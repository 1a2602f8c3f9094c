"""``fabnet train``: the command-line face of ``fabnet.train.train``.

Two stages, as the paper trains them:

    fabnet train --data ROOT --out runs/k1 --sources 1 --curriculum
    fabnet train --data ROOT --out runs/k3 --sources 3 --curriculum --init runs/k1/checkpoints/last.pt \
        [--freeze-flow-decoder]

Under ``torchrun --nproc_per_node N -m fabnet train ...`` each process trains one data shard
with DistributedDataParallel (nccl on GPUs, gloo on CPUs); rank 0 writes logs and checkpoints.
--out is locked while a run uses it (a second run on it is refused, naming the first's pid), and
a run already there is continued with --resume or replaced with --overwrite, never truncated.
Exit codes: 0 done, 130 / 143 stopped by SIGINT / SIGTERM (a checkpoint was saved), 2 bad input,
1 a non-finite loss or gradient, a checkpoint that could not be written (disk full), more than
5 % of an epoch's frames unreadable, a data-loading worker killed (the steps done are saved) or
memory run out; the checkpoints already on disk are kept.
"""

from __future__ import annotations

import argparse
import signal
import sys

# From torch-free modules: `fabnet --help` builds this parser without loading torch.
from fabnet.arguments import (
    add_progress_flag,
    device,
    finite_float,
    non_negative_float,
    non_negative_int,
    plain_text,
    positive_float,
    positive_int,
    power_of_two_in,
    writable_dir,
)
from fabnet.model.defaults import DEFAULT_WIDTH


def _data_and_model_arguments(p: argparse.ArgumentParser) -> None:
    """The data, the output, the frame size, K and the network width."""
    p.add_argument(
        "--config",
        metavar="RUN/config.json",
        default=None,
        help="start from a saved run's configuration; options given here override it",
    )
    p.add_argument("--data", default=None, help="data root ROOT/<identity>/<video>/<track>/<frame>.jpg (required)")
    p.add_argument(
        "--out", default=None, type=writable_dir, help="run directory (metrics.jsonl, checkpoints/, figures/; required)"
    )
    p.add_argument(
        "--size",
        type=power_of_two_in(32, 256),
        default=256,
        help="frame side, a power of two in [32, 256] (default 256)",
    )
    p.add_argument("--sources", type=positive_int, default=1, help="K source frames per target (default 1)")
    p.add_argument(
        "--width",
        type=positive_int,
        default=DEFAULT_WIDTH,
        help=f"channels after the encoder's first conv, doubling to at most 8x (default {DEFAULT_WIDTH}, "
        "pix2pix's; 16, the authors' release, trains ~4x faster on a CPU)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="per process; default 32 with --curriculum, 8 without (the paper's)",
    )


def _schedule_arguments(p: argparse.ArgumentParser) -> None:
    """How long, the epoch, the curriculum and its plateau patience."""
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (default 1000)")
    length.add_argument("--epochs", type=positive_int, default=None, help="passes over the training plan")
    p.add_argument("--epoch-length", type=positive_int, default=None, help="samples per epoch (default: one per track)")
    p.add_argument("--curriculum", action="store_true", help="sorted-loss window curriculum 0-50%% -> 40-90%%")
    p.add_argument(
        "--patience",
        type=positive_int,
        default=2,
        help="validation rounds without improvement that make a plateau (default 2)",
    )


def _optimiser_arguments(p: argparse.ArgumentParser) -> None:
    """The optimiser and the decoders' start; --paper sets the paper's."""
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's settings for what is not given: SGD at 1e-3, momentum 0.9, random last "
        "decoder convs, tanh confidence logits (r = 1)",
    )
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 2e-4; --paper: 1e-3)")
    p.add_argument(
        "--momentum", type=finite_float(0.0, 1.0, high_open=True), default=None, help="SGD momentum (default 0.9)"
    )
    p.add_argument("--weight-decay", type=non_negative_float, default=None, help="(default 0)")
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default=None,
        help="adam (betas 0.9/0.999; default) or sgd (--paper)",
    )
    p.add_argument(
        "--confidence-range",
        type=positive_float,
        default=None,
        help="bound r of the confidence logits (default 8: one source can take a pixel whole; --paper: 1)",
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="random last decoder convs (the paper's) instead of the identity warp and equal confidences",
    )


def _start_arguments(p: argparse.ArgumentParser) -> None:
    """Where the run starts from: --init, --resume, --overwrite."""
    p.add_argument("--init", default=None, help="start from this checkpoint (encoder + flow decoder)")
    p.add_argument("--freeze-flow-decoder", action="store_true", help="keep the --init flow decoder fixed")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue OUT/checkpoints/last.pt (or CKPT); options not given keep the checkpoint's, "
        "a new --lr, --momentum or --weight-decay applies from here on",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it such a run is refused unless resumed); "
        "with --resume CKPT, rewind this run to CKPT's step",
    )


def _reporting_arguments(p: argparse.ArgumentParser) -> None:
    """Seed, validation, checkpoints, logs and figures."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=positive_int, default=100, help="validate every N steps (default 100)")
    p.add_argument("--val-batches", type=positive_int, default=4, help="validation batches per process (default 4)")
    p.add_argument("--no-initial-val", action="store_true", help="skip the validation before the first step")
    p.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=100,
        help="write last.pt every N steps; 0: only at the end (default 100)",
    )
    p.add_argument("--log-every", type=positive_int, default=10, help="metrics.jsonl record every N steps (default 10)")
    p.add_argument(
        "--figure-every", type=non_negative_int, default=500, help="figures every N steps, 0: only at the end"
    )
    p.add_argument("--no-figures", action="store_true", help="write no PNG figures")
    p.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard event files (default: OUT/tensorboard, when tensorboard is installed)",
    )


def _machine_arguments(p: argparse.ArgumentParser) -> None:
    """Device, data loading, the op's backend and the GPU speed options."""
    p.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--data-backend", default="auto", choices=("dali", "pil", "auto"))
    p.add_argument(
        "--num-workers", type=non_negative_int, default=2, help="data loading workers per process (default 2)"
    )
    p.add_argument(
        "--op-backend",
        default="auto",
        choices=("auto", "cpu", "cuda", "triton", "reference"),
        help="backend of the fused warp/blend/L1 op",
    )
    p.add_argument("--channels-last", action="store_true", help="channels-last convolutions (GPU)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast of encoder/decoders (GPU)")
    p.add_argument("--stop-after", type=positive_int, default=None, help=argparse.SUPPRESS)
    add_progress_flag(p)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train FAb-Net on face tracks",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_and_model_arguments(p)
    _schedule_arguments(p)
    _optimiser_arguments(p)
    _start_arguments(p)
    _reporting_arguments(p)
    _machine_arguments(p)
    # Every option's default moves to DEFAULTS and the parsed namespace holds only what was typed:
    # that is what overrides --config or the resumed run's configuration (``resolve``).
    for action in p._actions:
        if action.dest != "help":
            DEFAULTS[action.dest] = action.default
            action.default = argparse.SUPPRESS
    p.set_defaults(func=run)


DEFAULTS: dict = {}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Every option's value: typed on the command line, else from --config (or, resuming without
    it, the checkpoint's own configuration), else its default. Idempotent."""
    if getattr(args, "_resolved", False):
        return args
    from fabnet.train.config_file import options_from_config, read_config

    typed = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    saved, extra, source = {}, {}, None
    if typed.get("config"):
        saved, extra = options_from_config(read_config(typed["config"]))
        source = f"--config {typed['config']}"
    # The checkpoint --resume names is read here once: its configuration (without --config) and
    # its optimisation options (``config_from_args``'s base) both come from this one load.
    state = _resumed_state(typed.get("resume"), typed.get("out") or saved.get("out"))
    config = _resumed_config(state)
    if not typed.get("config") and config is not None:
        saved, extra = options_from_config(config)
        source = "the resumed checkpoint"
    if typed.get("paper"):  # --paper typed sets what it covers over the file, as any flag does
        for dest in ("optimizer", "lr", "momentum", "weight_decay", "confidence_range", "random_init"):
            saved.pop(dest, None)
    if "steps" in typed or "epochs" in typed:  # the command line's length replaces the file's
        saved.pop("steps", None)
        saved.pop("epochs", None)
    values = {**DEFAULTS, **saved, **typed}
    for name in ("data", "out"):
        if values[name] is None:
            hint = "" if source else " (or give --config RUN/config.json)"
            raise ValueError(f"argument --{name} is required{hint}")
    if source and "out" in saved and "out" not in typed:
        from fabnet.arguments import writable_dir

        writable_dir(values["out"])
    resolved = argparse.Namespace(**{**vars(args), **values})
    resolved._resolved, resolved._file_only = True, extra
    resolved._resumed_options = _resumed_options(state)
    return resolved


def config_from_args(args: argparse.Namespace):
    from fabnet.train.config import PAPER, TrainConfig

    args = resolve(args)
    # Options not given on the command line: the paper's with --paper (asked for, so a resumed
    # run of other settings is refused), else the resumed checkpoint's, else TrainConfig's.
    base = PAPER if args.paper else (args._resumed_options or {k: getattr(TrainConfig, k) for k in PAPER})
    given = dict(
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        confidence_range=args.confidence_range,
        identity_init=False if args.random_init else None,
    )
    chosen = {k: (given[k] if given[k] is not None else base[k]) for k in PAPER}
    return TrainConfig(
        **chosen,
        data=args.data,
        out=args.out,
        size=args.size,
        num_sources=args.sources,
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        epochs=args.epochs,
        epoch_length=args.epoch_length,
        curriculum=args.curriculum,
        patience=args.patience,
        init=args.init,
        freeze_flow_decoder=args.freeze_flow_decoder,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        val_every=args.val_every,
        val_batches=args.val_batches,
        val_at_start=not args.no_initial_val,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        figure_every=args.figure_every,
        figures=not args.no_figures,
        tensorboard=not args.no_tensorboard,
        device=args.device,
        data_backend=args.data_backend,
        num_workers=args.num_workers,
        op_backend=args.op_backend,
        channels_last=args.channels_last,
        bf16=args.bf16,
        stop_after=args.stop_after,
        progress=args.progress,
        **args._file_only,
    )


def _resumed_state(resume, out) -> dict | None:
    """The checkpoint --resume names (OUT/checkpoints/last.pt, or the path given); None when not
    resuming or when the file cannot be read (train() then reports what is wrong with it)."""
    import os

    if not resume:
        return None
    if isinstance(resume, str):
        path = resume
    elif out is not None:
        path = os.path.join(out, "checkpoints", "last.pt")
    else:
        return None
    try:
        from fabnet.model.checkpoint import load_checkpoint

        return load_checkpoint(path)
    except (OSError, ValueError):
        return None


def _resumed_config(state: dict | None) -> dict | None:
    """The TrainConfig dict a resumed checkpoint holds (its fields this fabnet knows)."""
    config = (state or {}).get("train_config")
    if not isinstance(config, dict):
        return None
    from fabnet.train.config import TrainConfig

    known = {f for f in TrainConfig.__dataclass_fields__}
    return {k: v for k, v in config.items() if k in known}


def _resumed_options(state: dict | None) -> dict | None:
    """The optimisation options (``PAPER``'s keys) of a resumed checkpoint, so that resuming without
    retyping them continues the run as it was (None: not resuming, or the file cannot say)."""
    from fabnet.train.config import PAPER

    old = (state or {}).get("train_config")
    if not isinstance(old, dict) or not all(k in old for k in PAPER if k != "confidence_range"):
        return None
    options = {k: old.get(k) for k in PAPER}
    options["confidence_range"] = (state.get("model_config") or {}).get("confidence_range", old.get("confidence_range"))
    return options if all(v is not None for v in options.values()) else None


def run(args: argparse.Namespace) -> int:
    from fabnet.data.bad_frames import TooManyBadFrames
    from fabnet.model.checkpoint import CheckpointWriteError
    from fabnet.train.loop import train
    from fabnet.train.state import NonFiniteError, ResourceError

    try:
        result = train(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"fabnet train: error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteError, CheckpointWriteError, TooManyBadFrames, ResourceError) as err:
        print(f"fabnet train: error: {err}", file=sys.stderr)
        return 1
    if result.interrupted:
        reason = result.stop_reason
        print(
            f"fabnet train: stopped at step {result.step} ({reason}); checkpoint {result.checkpoint}; "
            f"continue with --resume",
            file=sys.stderr,
        )
        codes = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
        return codes.get(reason, 0)
    print(f"fabnet train: done, {result.step} steps, best val L1 {result.best_val:.4f}, checkpoint {result.checkpoint}")
    return 0
