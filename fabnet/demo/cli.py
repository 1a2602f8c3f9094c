"""``fabnet demo`` and ``fabnet study``: the method end to end on synthetic faces.

Heavy imports happen inside the command functions so ``fabnet --help`` stays light.
"""

from __future__ import annotations

import os

from fabnet.arguments import int_at_least, positive_float, positive_int, writable_dir


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
    import signal
    import sys

    from fabnet.demo.study import run_study, study_config

    cfg = study_config(args.quick, seeds=args.seeds, steps=args.steps)
    try:
        run_study(cfg, args.out, workers=args.workers, progress=args.progress)
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
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


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
    _add_machine_options(p)
    p.add_argument(
        "--data", type=writable_dir, default=None, help="reuse / keep the synthetic data here (default DIR/data)"
    )
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "study",
        help="the paper's ablation and every baseline over several training seeds, with intervals",
        description="One training set and one probe set of unseen identities; per training seed, FAb-Net's "
        "four variants at equal steps (1 / 3 sources, with / without the curriculum, same initialisation), the "
        "autoencoder, contrastive, random-init and supervised encoders, raw pixels and random features, each "
        "probed linearly. Writes DIR/report.md, DIR/report.json and figures: seed means with 95 %% intervals over "
        "test identities and the seeds' sd, and the paper's claims checked. About an hour on 2 CPU cores "
        "(--quick: a smoke test, ~1 min). Run again with the same --out to continue an interrupted study.",
    )
    p.add_argument("--out", type=writable_dir, default="study_out", help="output directory (default study_out)")
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke test whose numbers mean nothing")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; at least 2)")
    p.add_argument(
        "--steps",
        type=int_at_least(2),
        default=None,
        help="optimiser steps per method, half of them shared by the FAb-Net variants (default 1000)",
    )
    _add_machine_options(p)
    p.set_defaults(func=cmd_study)


__all__ = ["register"]
