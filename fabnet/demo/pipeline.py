"""``fabnet demo``: the whole method on synthetic faces, from data to a report, on a CPU.

1. Render a synthetic data root for training (identity-disjoint train / val / test) and,
   apart, a labelled probe set of identities the training never sees.
2. Train FAb-Net with one source frame; then three source frames with the curriculum, started
   from the one-source model (the paper's schedule, shrunk).
3. Baselines on the same frames: a random-init encoder and the autoencoder (optionally the
   rotation-prediction network).
4. Embed the probe set with every frozen encoder, with the raw pixels (the no-learning
   reference) and with random features (the noise floor), fit the linear probes (landmarks,
   pose, expression, attributes) and score them on its test identities with 95 % intervals.
5. Cross-identity retrieval on those test identities, and what the FAb-Net decoders read from
   the target embedding (``fabnet.probe.swap``: the warp with that embedding swapped out).
6. Write ``DIR/report.md``, ``DIR/report.json`` and ``DIR/figures/*.png``.

Sizes are chosen for a 2-core CPU: ``DemoConfig.full()`` takes about 13 minutes (789 s
measured on 2026-12-01), ``quick()`` under one. The multi-seed comparison with every ablation
and baseline is ``fabnet.demo.study``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

from fabnet.demo.config import METHOD_LABELS, DemoConfig
from fabnet.demo.figures import copy_training_figures, fabnet_curves, figure_dir, loss_figure, probe_bar_chart
from fabnet.demo.report import write_report
from fabnet.demo.runs import (
    DemoInterrupted,
    baseline,
    load_average,
    log,
    provenance,
    synth_probe_set,
    synth_training_data,
    train_fabnet,
)
from fabnet.probe.tasks import TASKS


class _Stage:
    """The stage the demo is in, named in the message when it is interrupted."""

    name = "setup"


def run_demo(cfg: DemoConfig, out: str, *, workers: int = 1, keep_data: str | None = None,
             progress: bool = True) -> dict:  # fmt: skip
    """Run every stage; returns the report dict (also DIR/report.json, DIR/report.md).

    out: output directory. workers: processes rendering the data. keep_data: the synthetic
    data root (default DIR/data; reused when it was made with the same sizes and seed).
    progress: tqdm bars for training, baselines and embedding.

    Ctrl-C stops the whole demo with DemoInterrupted naming the stage; trained stages and
    checkpoints stay in DIR, and the same call with the same ``out`` continues: finished
    training runs and baselines are reused, an interrupted FAb-Net run is resumed.
    """
    stage = _Stage()
    try:
        return _run_stages(cfg, out, workers=workers, keep_data=keep_data, progress=progress, stage=stage)
    except KeyboardInterrupt:
        raise DemoInterrupted(stage.name) from None


def _run_stages(cfg: DemoConfig, out: str, *, workers: int, keep_data: str | None, progress: bool,
                stage: _Stage) -> dict:  # fmt: skip
    from fabnet.data.index import load_index
    from fabnet.data.labels import label_info
    from fabnet.probe.confidence import confidence_study
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.pipeline import dump_json, embed_splits, format_table, probe_task, retrieval_figure
    from fabnet.train.baselines import BaselineConfig, preload

    t_start = time.perf_counter()
    load_start = load_average()
    os.makedirs(out, exist_ok=True)
    fig_dir = figure_dir(out)
    data = keep_data or os.path.join(out, "data")
    wall: dict[str, float] = {}
    figures: dict[str, str] = {}
    curves: dict[str, dict] = {}
    checkpoints: dict[str, str] = {}

    def timed(key: str, t0: float) -> None:
        wall[key] = round(time.perf_counter() - t0, 1)

    stage.name = "synthetic data"
    log(f"{cfg.name} demo into {out}: synthesising data")
    t0 = time.perf_counter()
    synth_info = synth_training_data(cfg, data, workers, progress)
    timed("synth", t0)
    t0 = time.perf_counter()
    probe_data = (keep_data.rstrip("/") + "_probe") if keep_data else os.path.join(out, "probe_data")
    log(f"synthesising the probe set ({cfg.probe_identities} unseen identities)")
    synth_probe_set(cfg, probe_data, workers, progress)
    timed("synth_probe_set", t0)
    probe_records = load_index(probe_data)
    probe_test_ids = sorted({r.identity for r in probe_records if r.split == "test"})
    records = load_index(data)
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    test_ids = sorted({r.identity for r in records if r.split == "test"})

    stage.name = "FAb-Net 1 source"
    log(f"training FAb-Net, 1 source, {cfg.steps_1src} steps")
    t0 = time.perf_counter()
    r1 = train_fabnet(cfg, data, os.path.join(out, "runs", "fabnet_1src"), num_sources=1, steps=cfg.steps_1src,
                       batch=cfg.batch_1src, curriculum=False, init=None, patience=cfg.patience_1src,
                       progress=progress)  # fmt: skip
    timed("train_fabnet_1src", t0)
    checkpoints["fabnet_1src"] = r1.checkpoint
    curves["fabnet_1src"] = fabnet_curves(r1)

    stage.name = "FAb-Net 3 sources + curriculum"
    log(f"training FAb-Net, 3 sources + curriculum from the 1-source model, {cfg.steps_3src} steps")
    t0 = time.perf_counter()
    r3 = train_fabnet(cfg, data, os.path.join(out, "runs", "fabnet_3src_curriculum"), num_sources=3,
                       steps=cfg.steps_3src, batch=cfg.batch_3src, curriculum=True, init=r1.checkpoint,
                       patience=cfg.patience, progress=progress)  # fmt: skip
    timed("train_fabnet_3src_curriculum", t0)
    checkpoints["fabnet_3src_curriculum"] = r3.checkpoint
    curves["fabnet_3src_curriculum"] = fabnet_curves(r3)
    for name, res in (("fabnet_1src", r1), ("fabnet_3src_curriculum", r3)):
        for path in copy_training_figures(res.run_dir, fig_dir, name):
            figures[os.path.splitext(os.path.basename(path))[0]] = path
    stage.name = "confidence and swap studies"
    t0 = time.perf_counter()
    test_records = [r for r in records if r.split == "test"]
    confidence = confidence_study(r3.checkpoint, test_records,
                                  os.path.join(fig_dir, "confidence_heatmaps.png"), rows=cfg.heatmap_samples,
                                  seed=cfg.seed)  # fmt: skip
    if confidence:
        figures["confidence_heatmaps"] = confidence["png"]
    timed("confidence_study", t0)
    t0 = time.perf_counter()
    from fabnet.probe.swap import target_swap_study

    target_swap = {name: target_swap_study(res.checkpoint, test_records, seed=cfg.seed)
                   for name, res in (("fabnet_1src", r1), ("fabnet_3src_curriculum", r3))}  # fmt: skip
    timed("target_swap_study", t0)

    train_records = [r for r in records if r.split == "train"]
    images = preload(train_records)
    baselines = [("random_init", 0, cfg.ae_batch), ("autoencoder", cfg.ae_steps, cfg.ae_batch)]
    if cfg.rotation_steps:
        baselines.append(("rotation", cfg.rotation_steps, cfg.ae_batch))
    for method, steps, batch in baselines:
        log(f"baseline {method}" + (f", {steps} steps" if steps else ""))
        t0 = time.perf_counter()
        bcfg = BaselineConfig(method=method, size=cfg.size, steps=steps, batch_size=batch, optimizer=cfg.optimizer,
                              lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              seed=cfg.seed)  # fmt: skip
        stage.name = f"baseline {method}"
        res = baseline(bcfg, train_records, os.path.join(out, "runs", method, "checkpoint.pt"), images, progress)
        timed(f"train_{method}", t0)
        checkpoints[method] = res.checkpoint
        if res.losses:
            curves[method] = {"train": list(enumerate(res.losses, 1)),
                              "ylabel": "L1" if method == "autoencoder" else "cross-entropy",
                              "train_label": "train loss"}  # fmt: skip
    del images
    figures["loss_curves"] = loss_figure(curves, os.path.join(fig_dir, "loss_curves.png"))

    info = label_info(data)
    pcfg = ProbeConfig(batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience,
                       seed=cfg.seed)  # fmt: skip
    probes: dict[str, dict] = {t: {} for t in TASKS}
    retrieval: dict[str, dict] = {}
    from fabnet.probe.noise import NoiseEncoder
    from fabnet.probe.pixels import PixelEncoder

    # A checkpoint path or the encoder itself.
    encoders = {**checkpoints, "pixels": PixelEncoder(cfg.size), "noise": NoiseEncoder(cfg.size, seed=cfg.seed)}
    for method, encoder in encoders.items():
        stage.name = f"embedding and probing {method}"
        log(f"embedding and probing {method}")
        t0 = time.perf_counter()
        emb = embed_splits(encoder, probe_data, progress=progress)
        timed(f"embed_{method}", t0)
        t0 = time.perf_counter()
        for task in TASKS:
            metrics, _ = probe_task(task, emb, config=pcfg, info=info)
            probes[task][method] = metrics
        timed(f"probe_{method}", t0)
        png = os.path.join(fig_dir, f"retrieval_{method}.png")
        retrieval[method] = retrieval_figure(emb["test"], png, queries=cfg.retrieval_queries, k=cfg.retrieval_k,
                                             seed=cfg.seed, title=f"{METHOD_LABELS.get(method, method)}: "
                                             "test queries (red) and cross-identity cosine neighbours")  # fmt: skip
        figures[f"retrieval_{method}"] = png
    figures["probe_metrics"] = probe_bar_chart(probes, os.path.join(fig_dir, "probe_metrics.png"),
                                               methods=list(encoders))  # fmt: skip
    wall["total"] = round(time.perf_counter() - t_start, 1)

    sizes = {"identities": cfg.identities, "tracks_per_identity": cfg.tracks_per_identity,
             "frames_per_track": cfg.frames_per_track, "image_size": cfg.image_size, "network_input": cfg.size,
             "embedding_dim": 256, "frames": len(records), **{f"{s}_frames": n for s, n in counts.items()},
             "test_identities": len(probe_test_ids), "probe_frames": len(probe_records),
             "training_test_identities": len(test_ids), "batch_1src": cfg.batch_1src, "batch_3src": cfg.batch_3src,
             "batch_baselines": cfg.ae_batch, "probe_batch": cfg.probe_batch}  # fmt: skip
    report = {
        "command": "fabnet demo"
        + (" --quick" if cfg.name == "quick" else "")
        + f" --out {out}"
        + (f" --data {keep_data}" if keep_data else ""),
        "config": asdict(cfg),
        "seeds": {"data": cfg.seed, "training": cfg.seed, "probes": cfg.seed, "split": 0},
        "sizes": sizes,
        "data": {
            "root": os.path.relpath(data, out),
            "frames": len(records),
            **counts,
            "test_identities": len(test_ids),
            "reused": synth_info.get("reused", False),
            "probe_root": os.path.relpath(probe_data, out),
        },
        "steps": {
            "fabnet_1src": r1.step,
            "fabnet_3src_curriculum": r3.step,
            "autoencoder": cfg.ae_steps,
            "random_init": 0,
            **({"rotation": cfg.rotation_steps} if cfg.rotation_steps else {}),
            "pixels": 0,
            "noise": 0,
        },
        "best_val_l1": {"fabnet_1src": r1.best_val, "fabnet_3src_curriculum": r3.best_val},
        "zero_flow_val_l1": {
            k: curves[k]["zero_flow"] for k in ("fabnet_1src", "fabnet_3src_curriculum") if "zero_flow" in curves[k]
        },
        "checkpoints": checkpoints,
        "probes": probes,
        "retrieval": retrieval,
        "confidence": confidence,
        "target_swap": target_swap,
        "figures": figures,
        "times": wall,
        **provenance(load_start),
    }
    write_report(report, out)
    # Paths in report.json relative to DIR, so the report stays valid when DIR is moved.
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    report["figures"] = {k: rel(v) for k, v in figures.items()}
    report["checkpoints"] = {k: rel(v) for k, v in checkpoints.items()}
    for r in list(retrieval.values()) + ([confidence] if confidence else []):
        r["png"] = rel(r["png"])
    dump_json(report, os.path.join(out, "report.json"))
    log(f"done in {wall['total']:.0f} s: {os.path.join(out, 'report.md')}")
    print(format_table(probes))
    return report


__all__ = ["run_demo"]
