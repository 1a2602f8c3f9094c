"""``fabnet demo`` and ``fabnet study``: the method end to end on synthetic faces.

Heavy imports happen inside the command functions so ``fabnet --help`` stays light.
"""

from __future__ import annotations

import os

from fabnet.arguments import add_progress_flag, int_at_least, positive_float, positive_int, writable_dir


def cmd_demo(args) -> int:
    import signal
    import sys

    from fabnet.demo.config import DemoConfig
    from fabnet.demo.pipeline import run_demo
    from fabnet.demo.runs import DemoInterrupted

    cfg = DemoConfig.quick() if args.quick else DemoConfig.full()
    if args.seed is not None:
        cfg.seed = args.seed
    if args.lr is not None:
        cfg.lr = args.lr
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                f"fabnet demo: error: --device cuda, but torch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); leave --device out to run on the CPU",
                file=sys.stderr,
            )
            return 2
    cfg.device = args.device
    try:
        run_demo(cfg, args.out, workers=args.workers, keep_data=args.data, progress=args.progress)
    except DemoInterrupted as stop:
        print(
            f"\nfabnet demo: interrupted during {stop.stage}; what was trained is kept in {args.out}; "
            "run the same command to continue",
            file=sys.stderr,
        )
        return 128 + signal.SIGINT
    return 0


def cmd_study(args) -> int:
    import shlex
    import signal
    import sys

    from fabnet.demo.study import run_study, study_config

    preset = "quick" if args.quick else args.preset
    try:
        cfg = study_config(
            preset, seeds=args.seeds, steps=args.steps, light=args.light, methods=args.methods, beside=args.beside
        )
    except ValueError as err:
        print(f"fabnet study: error: {err}", file=sys.stderr)
        return 2
    words = ["fabnet", "study", "--preset", preset]
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--light", args.light)):
        if value is not None:
            words += [flag, *map(str, value if isinstance(value, list) else [value])]
    for flag, value in (("--methods", args.methods), ("--beside", args.beside)):
        if value is not None:
            words += [flag, *(value if isinstance(value, list) else [value])]
    command = shlex.join(words + ["--out", args.out])
    try:
        run_study(cfg, args.out, workers=args.workers, progress=args.progress, command=command)
    except KeyboardInterrupt:
        print(
            f"\nfabnet study: interrupted; what was trained is kept in {args.out}; run the same command to continue",
            file=sys.stderr,
        )
        return 128 + signal.SIGINT
    return 0


def _add_machine_options(p) -> None:
    """--workers and --no-progress, as demo and study take them."""
    p.add_argument(
        "--workers",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="processes rendering the synthetic data (default: 2, or 1 on a 1-core machine)",
    )
    add_progress_flag(p)


def register(subparsers) -> None:
    """Add demo and study to the ``fabnet`` command line."""
    p = subparsers.add_parser(
        "demo",
        help="synthesise data, train FAb-Net and baselines, probe, retrieve, report",
        description="End to end on synthetic faces: FAb-Net 1 source, then 3 sources with the "
        "curriculum from the 1-source model; autoencoder and random-init baselines; "
        "linear probes for every task; retrieval. Writes DIR/report.md, "
        "DIR/report.json and figures. About 13 min on 2 CPU cores (--quick: under 1).",
    )
    p.add_argument("--out", type=writable_dir, default="demo_out", help="output directory (default demo_out)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller data and fewer steps (a smoke test whose numbers mean nothing; under 1 min)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of data, training and probes")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate of FAb-Net and the trained baselines")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the networks train (default cpu; cuda runs the fused CUDA op)",
    )
    _add_machine_options(p)
    p.add_argument(
        "--data", type=writable_dir, default=None, help="reuse / keep the synthetic data here (default DIR/data)"
    )
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "study",
        help="FAb-Net against the paper's rivals over several training seeds, with intervals",
        description="One training set and one probe set of unseen identities; per training seed, FAb-Net (1 "
        "source), the autoencoder and contrastive encoders (the paper's rivals), and as diagnostics the "
        "random-init and supervised encoders, raw pixels and random features, each probed linearly, absolute and "
        "within identity; the warp's share of the exact-geometry oracle. Writes DIR/report.md, DIR/report.json "
        "and figures: seed means with 95 % intervals over test identities and the seeds' sd, and the paper's "
        "claims checked. The cpu preset takes about an hour on 2 cores; gpu adds the curriculum / 3-source "
        "ablation at batch 32 for one CUDA GPU; quick is a smoke test (~1 min). Run again with the same --out "
        "to continue an interrupted study.",
    )
    p.add_argument("--out", type=writable_dir, default="study_out", help="output directory (default study_out)")
    p.add_argument("--preset", choices=("cpu", "gpu", "quick"), default="cpu", help="sizes and device (default cpu)")
    p.add_argument("--quick", action="store_true", help="the same as --preset quick")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument(
        "--steps", type=int_at_least(1), default=None, help="optimiser steps per method (default: the preset's)"
    )
    p.add_argument(
        "--light",
        choices=("head", "camera"),
        default=None,
        help="the generator's light: head (default) or camera (fixed while the head turns: the harder setting)",
    )
    p.add_argument(
        "--methods", nargs="+", default=None, help="only these methods (names as in report.json; default: all)"
    )
    p.add_argument(
        "--beside",
        default=None,
        help="another study's report.json (or its directory) whose tables this report shows beside its own",
    )
    _add_machine_options(p)
    p.set_defaults(func=cmd_study)


__all__ = ["register"]
