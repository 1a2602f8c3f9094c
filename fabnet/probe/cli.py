"""``fabnet embed``, ``fabnet probe`` and ``fabnet retrieve``.

Heavy imports (torch, the model) happen inside the command functions so ``fabnet --help``
stays fast.
"""

from __future__ import annotations

import argparse
import os

from fabnet.arguments import (
    add_progress_flag,
    existing_dir,
    existing_file,
    int_in,
    output_file,
    positive_float,
    positive_int,
    refuse_inputs_as_outputs,
)
from fabnet.probe.tasks import MAIN_METRIC, TASKS

# 3 S^2 features a frame: 256 gives 196608 (768 KB a frame in float32), the largest network
# input; S = 100000 asked for 120 GB a frame.
MAX_PIXELS_SIDE = 256


def _add_common(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        type=existing_file,
        help="a .pt written by `fabnet train` (RUN/checkpoints/last.pt) or by the demo's baselines",
    )
    source.add_argument(
        "--pixels",
        type=int_in(1, MAX_PIXELS_SIDE, "3 S^2 features a frame"),
        metavar="S",
        help="no network: the crop resized to S x S, its 3 S^2 pixels as the embedding (the no-learning reference)",
    )
    p.add_argument(
        "--data",
        required=True,
        type=existing_dir,
        help="data root (ROOT/<identity>/<video>/<track>/<frame>.jpg + labels.csv)",
    )
    p.add_argument(
        "--crop",
        type=_crop,
        default="center",
        help="evaluation crop: center (180/256 of the side, the training mean; default), full, or a fraction",
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="frames per encoder forward (default 128)")


def _crop(value: str):
    """ "center", "full", or the crop's side as a fraction of the frame's, in (0, 1]."""
    if value in ("center", "full"):
        return value
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected center, full or a fraction in (0, 1], got {value!r}") from None
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(f"expected center, full or a fraction in (0, 1], got {value}")
    return fraction


def _source(args):
    """What embeds the frames: the checkpoint's path, or a PixelEncoder for --pixels."""
    if args.pixels is not None:
        from fabnet.probe.pixels import PixelEncoder

        return PixelEncoder(args.pixels)
    return args.checkpoint


def _source_name(args) -> str:
    return f"pixels{args.pixels}" if args.pixels is not None else os.path.splitext(os.path.basename(args.checkpoint))[0]


def _refuse_overwriting_inputs(args, out_name: str, out: str | None) -> None:
    refuse_inputs_as_outputs({out_name: out}, {"--checkpoint": args.checkpoint, "--data": args.data})


def cmd_embed(args) -> int:
    from fabnet.probe.embedding_files import provenance, write_embeddings
    from fabnet.probe.pipeline import embed_splits

    _refuse_overwriting_inputs(args, "--out", args.out)
    splits = [args.split] if args.split else ["all"]
    emb = embed_splits(
        _source(args), args.data, splits, crop=args.crop, batch_size=args.batch_size, progress=args.progress
    )
    info = provenance(checkpoint=args.checkpoint, pixels=args.pixels, data=args.data, crop=args.crop, splits=splits)
    write_embeddings(emb, args.out, info)
    n = sum(len(e.records) for e in emb.values())
    sha = f" (sha256 {info['checkpoint_sha256'][:12]})" if info["checkpoint_sha256"] else ""
    print(f"wrote {n} embeddings of {args.checkpoint or _source_name(args)}{sha} to {args.out}")
    return 0


def cmd_probe(args) -> int:
    from fabnet.data.labels import label_info
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.pipeline import dump_json, embed_splits, format_table, probe_task

    _refuse_overwriting_inputs(args, "--json", args.json)
    tasks = list(TASKS) if args.task == "all" else [args.task]
    emb = embed_splits(_source(args), args.data, crop=args.crop, batch_size=args.batch_size)
    cfg = ProbeConfig(
        lr=args.lr, batch_size=args.probe_batch_size, max_epochs=args.max_epochs, patience=args.patience, seed=args.seed
    )
    results = {}
    info = label_info(args.data)
    name = args.name or _source_name(args)
    for task in tasks:
        metrics, _ = probe_task(task, emb, config=cfg, info=info)
        results[task] = {name: metrics}
        print(f"\n{task} (test split, {metrics['num_test']} frames; probe stopped at epoch {metrics['best_epoch']}):")
        for k, v in metrics.items():
            if isinstance(v, float):
                print(f"  {k:24s} {v:10.4f}")
    print()
    print(format_table(results, tasks))
    if args.json:
        dump_json(
            {"checkpoint": args.checkpoint, "pixels": args.pixels, "data": args.data, "probes": results}, args.json
        )
        print(f"\nwrote {args.json}")
    return 0


def cmd_retrieve(args) -> int:
    from fabnet.probe.pipeline import embed_splits, retrieval_figure

    _refuse_overwriting_inputs(args, "--out", args.out)
    emb = embed_splits(_source(args), args.data, [args.split], crop=args.crop, batch_size=args.batch_size)
    e = next(iter(emb.values()))
    what = os.path.basename(args.checkpoint) if args.checkpoint else f"raw pixels ({args.pixels} px)"
    summary = retrieval_figure(
        e,
        args.out,
        queries=args.queries,
        k=args.k,
        seed=args.seed,
        title=f"{what}: cosine neighbours, {args.split} split",
    )
    print(f"wrote {args.out}")
    if "neighbour_pose_diff_deg" in summary:
        print(
            "mean |yaw, pitch, roll| difference query-neighbour: "
            f"{summary['neighbour_pose_diff_deg']} deg (random other-identity frames: "
            f"{summary['random_pose_diff_deg']} deg)"
        )
    if "within_track_pose_r2" in summary:
        print(
            f"between-identity share of the embedding variance {summary['identity_share']:.3f}; "
            f"pose explains {summary['within_track_pose_r2']:.3f} of the within-track variance"
        )
    return 0


def register(subparsers) -> None:
    """Add embed, probe, retrieve to the ``fabnet`` command line."""
    p = subparsers.add_parser(
        "embed",
        help="frozen-encoder embeddings of a data root",
        description="Write the 256-d embeddings of every frame (with its path and "
        "identity) computed by a checkpoint's frozen encoder.",
    )
    _add_common(p)
    p.add_argument(
        "--out",
        required=True,
        type=output_file(".npz", ".pt", ".parquet"),
        help="output file: .npz (NumPy), .pt (torch, a dict per split) or .parquet (a row per frame); each "
        "records the checkpoint, its SHA-256, the data root, crop and split",
    )
    p.add_argument(
        "--split", choices=("train", "val", "test"), default=None, help="one split only (default: all frames)"
    )
    add_progress_flag(p)
    p.set_defaults(func=cmd_embed)

    p = subparsers.add_parser(
        "probe",
        help="linear probe of a frozen embedding (landmarks, pose, expression, attributes)",
        description="Train BatchNorm1d + Linear(bias=False) on frozen embeddings of the train "
        "split (Adam, early stopping on val) and report test metrics: "
        + ", ".join(f"{t}: {m}" for t, m in MAIN_METRIC.items())
        + ".",
    )
    _add_common(p)
    p.add_argument("--task", required=True, choices=TASKS + ("all",))
    p.add_argument("--json", type=output_file(".json"), default=None, help="also write the metrics as JSON here")
    p.add_argument(
        "--name", default=None, help="method name in the table / JSON (default: checkpoint file name, or pixelsS)"
    )
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3, the paper's)")
    p.add_argument("--probe-batch-size", type=positive_int, default=64)
    p.add_argument("--max-epochs", type=positive_int, default=300)
    p.add_argument(
        "--patience", type=positive_int, default=20, help="epochs without validation improvement before stopping"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_probe)

    p = subparsers.add_parser(
        "retrieve",
        help="cross-identity nearest neighbours, drawn as a grid (paper Fig. 5)",
        description="Rank frames of other identities by cosine similarity to each query's "
        "embedding and save a PNG: query column + top-k neighbours.",
    )
    _add_common(p)
    p.add_argument("--queries", type=positive_int, default=6, help="number of query frames (rows)")
    p.add_argument(
        "--k",
        type=positive_int,
        default=6,
        help="neighbours per query (columns; at most the number of other-identity frames)",
    )
    p.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="test",
        help="frames to query and search (default: test)",
    )
    p.add_argument(
        "--out", required=True, type=output_file(".png", ".pdf", ".svg"), help="output figure (.png, .pdf or .svg)"
    )
    p.add_argument("--seed", type=int, default=0, help="choice of the queries")
    p.set_defaults(func=cmd_retrieve)


__all__ = ["register"]
