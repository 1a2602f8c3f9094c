"""``fabnet demo``: the whole method on synthetic faces, from data to a report, on a CPU.

1. Render a synthetic data root for training (identity-disjoint train / val / test) and,
   apart, a labelled probe set of identities the training never sees.
2. Obtain every method of the demo (``fabnet.demo.methods``, in table order): FAb-Net with one
   source, then three sources with the curriculum started from the one-source model (the paper's
   schedule, shrunk); the random-init encoder and the autoencoder (optionally rotation
   prediction); raw pixels (the no-learning reference) and random features (the noise floor).
3. The FAb-Net variants' diagnostics: the confidences of the 3-source model, and what the
   decoders read from the target embedding (``fabnet.probe.swap``).
4. Embed the probe set with every method, fit the linear probes (landmarks, pose, expression,
   attributes) and score them on its test identities with 95 % intervals; cross-identity
   retrieval on the same identities.
5. Write ``DIR/report.md``, ``DIR/report.json`` and ``DIR/figures/*.png``.

Sizes are chosen for a 2-core CPU: ``DemoConfig.full()`` takes about 13 minutes (789 s
measured on 2026-12-01), ``quick()`` under one. The multi-seed comparison with every ablation
and baseline is ``fabnet.demo.study``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

from fabnet.demo.config import DemoConfig
from fabnet.demo.figures import copy_training_figures, fabnet_curves, figure_dir, loss_figure, probe_bar_chart
from fabnet.demo.methods import FABNET, METHODS, Context, Method, demo_methods, label, run_methods
from fabnet.demo.report import write_report
from fabnet.demo.runs import (
    DemoInterrupted,
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


def _is_stage_one(method: Method) -> bool:
    """The demo's first FAb-Net stage: one source, no curriculum; the others start from it."""
    return method.kind == FABNET and method.sources == 1 and not method.curriculum


class DemoSchedule:
    """The demo's budget: FAb-Net in two stages (1 source; then K sources from the 1-source
    model), the baselines for ``ae_steps`` (``<name>_steps`` where the config has one)."""

    def fabnet(self, ctx: Context, method: Method):
        cfg = ctx.cfg
        run = os.path.join(ctx.runs, method.name)
        if _is_stage_one(method):
            log(f"training FAb-Net, 1 source, {cfg.steps_1src} steps")
            return train_fabnet(
                cfg,
                ctx.data,
                run,
                num_sources=1,
                steps=cfg.steps_1src,
                batch=cfg.batch_1src,
                curriculum=False,
                init=None,
                patience=cfg.patience_1src,
                progress=ctx.progress,
            )
        stage1 = next((ctx.obtained[n] for n in ctx.obtained if _is_stage_one(METHODS[n])), None)
        if stage1 is None:
            raise ValueError(f"{method.name} starts from the 1-source model, which the demo's table must list first")
        log(f"training {method.label} from the 1-source model, {cfg.steps_3src} steps")
        return train_fabnet(
            cfg,
            ctx.data,
            run,
            num_sources=method.sources,
            steps=cfg.steps_3src,
            batch=cfg.batch_3src,
            curriculum=method.curriculum,
            init=stage1.encoder,
            patience=cfg.patience,
            progress=ctx.progress,
        )

    def baseline_budget(self, cfg, method: Method) -> tuple[int, int]:
        if method.kind == "untrained":
            return 0, cfg.ae_batch
        return getattr(cfg, f"{method.name}_steps", cfg.ae_steps), cfg.ae_batch


def run_demo(
    cfg: DemoConfig, out: str, *, workers: int = 1, keep_data: str | None = None, progress: bool = True
) -> dict:
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
        return _Demo(cfg, out, workers=workers, keep_data=keep_data, progress=progress, stage=stage).run()
    except KeyboardInterrupt:
        raise DemoInterrupted(stage.name) from None


class _Demo:
    """One demo run: its data, the methods obtained, their diagnostics, probes and the report."""

    def __init__(
        self, cfg: DemoConfig, out: str, *, workers: int, keep_data: str | None, progress: bool, stage: _Stage
    ):
        self.cfg, self.out, self.workers, self.keep_data, self.progress, self.stage = (
            cfg,
            out,
            workers,
            keep_data,
            progress,
            stage,
        )
        self.methods = demo_methods(cfg)
        self.data = keep_data or os.path.join(out, "data")
        self.probe_data = (keep_data.rstrip("/") + "_probe") if keep_data else os.path.join(out, "probe_data")
        self.wall: dict[str, float] = {}
        self.figures: dict[str, str] = {}

    def timed(self, key: str, t0: float) -> None:
        self.wall[key] = round(time.perf_counter() - t0, 1)

    def run(self) -> dict:
        from fabnet.probe.pipeline import format_table

        t_start, load_start = time.perf_counter(), load_average()
        os.makedirs(self.out, exist_ok=True)
        self.fig_dir = figure_dir(self.out)
        self.synthesise()
        obtained = self.obtain_methods()
        diagnostics = self.diagnostics(obtained)
        diagnostics["oracle"] = self.oracle(obtained)
        probes, retrieval = self.probe(obtained)
        self.wall["total"] = round(time.perf_counter() - t_start, 1)
        report = self.report(obtained, diagnostics, probes, retrieval, load_start)
        log(f"done in {self.wall['total']:.0f} s: {os.path.join(self.out, 'report.md')}")
        print(format_table(probes))
        return report

    def synthesise(self) -> None:
        from fabnet.data.index import load_index

        cfg = self.cfg
        self.stage.name = "synthetic data"
        log(f"{cfg.name} demo into {self.out}: synthesising data")
        t0 = time.perf_counter()
        self.synth_info = synth_training_data(cfg, self.data, self.workers, self.progress)
        self.timed("synth", t0)
        t0 = time.perf_counter()
        log(f"synthesising the probe set ({cfg.probe_identities} unseen identities)")
        synth_probe_set(cfg, self.probe_data, self.workers, self.progress)
        self.timed("synth_probe_set", t0)
        self.probe_records = load_index(self.probe_data)
        self.records = load_index(self.data)

    def obtain_methods(self) -> dict:
        from fabnet.train.baselines import preload

        train_records = [r for r in self.records if r.split == "train"]
        images = preload(train_records) if any(m.objective for m in self.methods) else None
        runs = os.path.join(self.out, "runs")
        ctx = Context(self.cfg, DemoSchedule(), self.data, runs, train_records, images, self.cfg.seed, self.progress)

        def on_start(method: Method) -> None:
            self.stage.name = method.label if method.kind == FABNET else f"baseline {method.name}"
            if method.kind != FABNET:
                log(f"baseline {method.name}")

        obtained = run_methods(ctx, self.methods, on_start)
        for name, o in obtained.items():
            if o.train_result is not None or o.losses or isinstance(o.encoder, str):
                self.wall[f"train_{name}"] = o.wall_s
        ctx.images = None
        curves = {}
        for name, o in obtained.items():
            if o.train_result is not None:
                curves[name] = fabnet_curves(o.train_result)
                for path in copy_training_figures(o.train_result.run_dir, self.fig_dir, name):
                    self.figures[os.path.splitext(os.path.basename(path))[0]] = path
            elif o.losses:
                curves[name] = {
                    "train": list(enumerate(o.losses, 1)),
                    "train_label": "train loss",
                    "ylabel": METHODS[name].loss_name or "loss",
                }
        self.curves = curves
        self.figures["loss_curves"] = loss_figure(curves, os.path.join(self.fig_dir, "loss_curves.png"))
        return obtained

    def diagnostics(self, obtained: dict) -> dict:
        """The confidence study (the first FAb-Net variant with several sources) and the
        target-swap study (every FAb-Net variant), on the training data's test identities."""
        from fabnet.probe.confidence import confidence_study
        from fabnet.probe.swap import target_swap_study

        cfg = self.cfg
        test_records = [r for r in self.records if r.split == "test"]
        self.stage.name = "confidence and swap studies"
        t0 = time.perf_counter()
        confidence = {}
        several = [m for m in self.methods if "confidence" in m.diagnostics]
        if several:
            png = os.path.join(self.fig_dir, "confidence_heatmaps.png")
            confidence = confidence_study(
                obtained[several[0].name].encoder, test_records, png, rows=cfg.heatmap_samples, seed=cfg.seed
            )
            if confidence:
                self.figures["confidence_heatmaps"] = confidence["png"]
        self.timed("confidence_study", t0)
        t0 = time.perf_counter()
        swap = {
            m.name: target_swap_study(obtained[m.name].encoder, test_records, seed=cfg.seed)
            for m in self.methods
            if "target_swap" in m.diagnostics
        }
        self.timed("target_swap_study", t0)
        return {"confidence": confidence, "target_swap": swap}

    def oracle(self, obtained: dict) -> dict:
        """The oracle budget of the training data's test identities with the 1-source model
        (fabnet.data.budget)."""
        from fabnet.data.budget import oracle_budget

        one = [m for m in self.methods if _is_stage_one(m)]
        self.stage.name = "oracle budget"
        t0 = time.perf_counter()
        log(f"oracle budget on {self.cfg.oracle_pairs} test pairs")
        checkpoint = obtained[one[0].name].encoder if one else None
        out = oracle_budget(self.data, size=self.cfg.size, pairs=self.cfg.oracle_pairs, checkpoint=checkpoint)
        self.timed("oracle", t0)
        return out

    def probe(self, obtained: dict) -> tuple[dict, dict]:
        """Every method's probes and retrieval on the probe set's test identities."""
        from fabnet.data.labels import label_info
        from fabnet.probe.linear import ProbeConfig
        from fabnet.probe.pipeline import WITHIN_IDENTITY_TASKS, embed_splits, probe_task, retrieval_figure

        cfg = self.cfg
        info = label_info(self.data)
        pcfg = ProbeConfig(
            batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience, seed=cfg.seed
        )
        probes: dict[str, dict] = {t: {} for t in TASKS}
        self.within: dict[str, dict] = {t: {} for t in WITHIN_IDENTITY_TASKS}
        retrieval: dict[str, dict] = {}
        for name, o in obtained.items():
            self.stage.name = f"embedding and probing {name}"
            log(f"embedding and probing {name}")
            t0 = time.perf_counter()
            emb = embed_splits(o.encoder, self.probe_data, progress=self.progress)
            self.timed(f"embed_{name}", t0)
            t0 = time.perf_counter()
            for task in TASKS:
                probes[task][name], _ = probe_task(task, emb, config=pcfg, info=info)
            for task in WITHIN_IDENTITY_TASKS:
                self.within[task][name], _ = probe_task(task, emb, config=pcfg, info=info, within_identity=True)
            self.timed(f"probe_{name}", t0)
            png = os.path.join(self.fig_dir, f"retrieval_{name}.png")
            title = f"{label(name)}: test queries (red) and cross-identity cosine neighbours"
            retrieval[name] = retrieval_figure(
                emb["test"], png, queries=cfg.retrieval_queries, k=cfg.retrieval_k, seed=cfg.seed, title=title
            )
            self.figures[f"retrieval_{name}"] = png
        self.figures["probe_metrics"] = probe_bar_chart(
            probes, os.path.join(self.fig_dir, "probe_metrics.png"), methods=list(obtained)
        )
        return probes, retrieval

    def report(self, obtained: dict, diagnostics: dict, probes: dict, retrieval: dict, load_start) -> dict:
        from fabnet.probe.pipeline import dump_json

        cfg, out, records = self.cfg, self.out, self.records
        counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
        test_ids = sorted({r.identity for r in records if r.split == "test"})
        probe_test_ids = sorted({r.identity for r in self.probe_records if r.split == "test"})
        fabnet = [n for n, o in obtained.items() if o.train_result is not None]
        sizes = {
            "identities": cfg.identities,
            "tracks_per_identity": cfg.tracks_per_identity,
            "frames_per_track": cfg.frames_per_track,
            "image_size": cfg.image_size,
            "network_input": cfg.size,
            "embedding_dim": 256,
            "frames": len(records),
            **{f"{s}_frames": n for s, n in counts.items()},
            "test_identities": len(probe_test_ids),
            "probe_frames": len(self.probe_records),
            "training_test_identities": len(test_ids),
            "batch_1src": cfg.batch_1src,
            "batch_3src": cfg.batch_3src,
            "batch_baselines": cfg.ae_batch,
            "probe_batch": cfg.probe_batch,
        }
        checkpoints = {n: o.encoder for n, o in obtained.items() if isinstance(o.encoder, str)}
        report = {
            "command": "fabnet demo"
            + (" --quick" if cfg.name == "quick" else "")
            + f" --out {out}"
            + (f" --data {self.keep_data}" if self.keep_data else ""),
            "config": asdict(cfg),
            "seeds": {"data": cfg.seed, "training": cfg.seed, "probes": cfg.seed, "split": 0},
            "sizes": sizes,
            "data": {
                "root": os.path.relpath(self.data, out),
                "frames": len(records),
                **counts,
                "test_identities": len(test_ids),
                "reused": self.synth_info.get("reused", False),
                "probe_root": os.path.relpath(self.probe_data, out),
            },
            "steps": {n: o.steps for n, o in obtained.items()},
            "best_val_l1": {n: obtained[n].train_result.best_val for n in fabnet},
            "zero_flow_val_l1": {n: self.curves[n]["zero_flow"] for n in fabnet if "zero_flow" in self.curves[n]},
            "checkpoints": checkpoints,
            "probes": probes,
            "probes_within_identity": self.within,
            "retrieval": retrieval,
            **diagnostics,
            "figures": self.figures,
            "times": self.wall,
            **provenance(load_start),
        }
        write_report(report, out, self.methods)
        # Paths in report.json relative to DIR, so the report stays valid when DIR is moved.
        rel = lambda p: os.path.relpath(p, out)  # noqa: E731
        report["figures"] = {k: rel(v) for k, v in self.figures.items()}
        report["checkpoints"] = {k: rel(v) for k, v in checkpoints.items()}
        for r in list(retrieval.values()) + ([diagnostics["confidence"]] if diagnostics["confidence"] else []):
            r["png"] = rel(r["png"])
        dump_json(report, os.path.join(out, "report.json"))
        return report


__all__ = ["DemoSchedule", "run_demo"]
