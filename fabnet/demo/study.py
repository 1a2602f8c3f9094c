"""``fabnet study``: the paper's ablation and the baselines over several training seeds.

One synthetic training set and one labelled probe set of unseen identities (as ``fabnet demo``),
then for every training seed:

1. The ablation at equal total steps, from the same initialisation. A shared first half (1
   source, no curriculum, ``steps / 2``) is continued for ``steps / 2`` more in four ways:
   1 source, 1 source + curriculum, 3 sources, 3 sources + curriculum (the paper's schedule:
   the K-source model starts from the 1-source one). Every variant thus has ``steps`` steps and
   the same weights at the fork; the second halves start with a fresh optimiser each.
2. The baselines a user would pick instead, ``steps`` steps each on the same frames: the
   autoencoder, the contrastive (SimCLR) encoder, the random-init encoder, and the supervised
   ceiling (the same encoder trained with the labels); plus raw pixels and random features.
3. Linear probes of every frozen embedding on the probe set's test identities; the learned
   warp's validation L1 against not warping; the 3-source models' confidence selectivity.

The report (``fabnet.demo.study_report``) averages each metric over the seeds, with a 95 %
interval from a bootstrap over test identities of that seed mean, and the seeds' standard
deviation beside it. Everything trained is kept under ``DIR/seed<N>/`` and reused by the same
command, so an interrupted study continues.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace

from fabnet.demo.config import SyntheticRunConfig
from fabnet.demo.methods import FABNET, METHODS, Context, Method, run_methods, study_methods
from fabnet.demo.runs import load_average, log, provenance, synth_probe_set, synth_training_data, train_fabnet

# The study's methods by name, in table order (the records: fabnet.demo.methods.METHODS).
STUDY_METHODS = tuple(m.name for m in study_methods())
# The FAb-Net variants of the ablation: (sources, curriculum) in the second half.
ABLATIONS = {m.name: (m.sources, m.curriculum) for m in study_methods() if m.kind == FABNET}


@dataclass
class StudyConfig(SyntheticRunConfig):
    """Sizes of a study (the shared fields: ``SyntheticRunConfig``; ``seed`` draws the data
    only). ``steps`` is every method's total optimiser steps (half shared, half per variant for
    FAb-Net), ``batch`` every method's frames (pairs) per step, ``seeds`` the training seeds
    (initialisation, batches, probes)."""

    identities: int = 300
    steps: int = 1000
    batch: int = 16
    # The curriculum's plateau: 3 validation rounds (150 steps) without improvement shift the
    # window, so it can move a few times in the 500-step second half (16 would never shift).
    patience: int = 3
    # The shared first half has no curriculum; as the demo's stage 1, its LR is cut only after
    # 16 rounds (800 steps) without improvement, i.e. not within it.
    patience_first_half: int = 16
    bootstrap: int = 1000
    seeds: tuple = (0, 1, 2)
    name: str = "full"

    @classmethod
    def quick(cls) -> StudyConfig:
        # Every stage on a toy budget: a smoke test, its numbers mean nothing.
        return cls(
            identities=24,
            tracks_per_identity=2,
            frames_per_track=8,
            image_size=48,
            probe_identities=40,
            probe_frames=3,
            steps=16,
            batch=4,
            val_every=4,
            val_batches=2,
            patience=1,
            patience_first_half=2,
            probe_max_epochs=30,
            probe_patience=5,
            bootstrap=200,
            seeds=(0, 1),
            heatmap_samples=2,
            name="quick",
        )


class StudySchedule:
    """Every method ``steps`` steps of ``batch``: FAb-Net's variants continue the shared first
    half (``fork``) for the second half, from the same weights."""

    def __init__(self, fork):
        self.fork = fork

    def fabnet(self, ctx: Context, method: Method):
        cfg = ctx.cfg
        half = cfg.steps // 2
        log(f"seed {ctx.seed}: {method.name}, {cfg.steps - half} more steps", "study")
        return train_fabnet(
            cfg,
            ctx.data,
            os.path.join(ctx.runs, method.name),
            num_sources=method.sources,
            steps=cfg.steps - half,
            batch=cfg.batch,
            curriculum=method.curriculum,
            init=self.fork.checkpoint,
            patience=cfg.patience,
            progress=ctx.progress,
        )

    def baseline_budget(self, cfg, method: Method) -> tuple[int, int]:
        return (0 if method.kind == "untrained" else cfg.steps), cfg.batch


def _val_curve(metrics: list[dict], offset: int = 0) -> list[tuple[int, float]]:
    """(step, validation L1) of a run's metrics, its steps counted from ``offset``."""
    return [(offset + m["step"], m["val_loss"]) for m in metrics if m.get("kind") == "val"]


def _train_seed(cfg: StudyConfig, seed: int, data: str, out: str, train_records, images, progress: bool) -> dict:
    """The methods obtained, validation figures and wall times of one training seed (``images``:
    the training frames, ``fabnet.train.baselines.preload(train_records)``, for the baselines)."""
    from fabnet.train.metrics import zero_flow_loss

    runs = os.path.join(out, f"seed{seed}", "runs")
    tcfg = replace(cfg, seed=seed)  # the data seed gives way to the training seed
    half = cfg.steps // 2
    t0 = time.perf_counter()
    log(f"seed {seed}: shared first half, 1 source, {half} steps", "study")
    fork = train_fabnet(
        tcfg,
        data,
        os.path.join(runs, "fabnet_first_half"),
        num_sources=1,
        steps=half,
        batch=cfg.batch,
        curriculum=False,
        init=None,
        patience=cfg.patience_first_half,
        progress=progress,
    )
    wall = {"fabnet_first_half": round(time.perf_counter() - t0, 1)}
    ctx = Context(tcfg, StudySchedule(fork), data, runs, train_records, images, seed, progress)

    def on_start(method: Method) -> None:
        if method.kind != FABNET:
            log(f"seed {seed}: baseline {method.name}", "study")

    obtained = run_methods(ctx, study_methods(), on_start)
    warp, curves = {}, {"fabnet_first_half": _val_curve(fork.metrics)}
    for name, o in obtained.items():
        if isinstance(o.encoder, str):
            wall[name] = o.wall_s
        if o.train_result is not None:
            metrics = o.train_result.metrics
            warp[name] = {"best_val_l1": o.train_result.best_val, "zero_flow_val_l1": zero_flow_loss(metrics)}
            curves[name] = _val_curve(metrics, offset=half)
    return {"obtained": obtained, "warp": warp, "val_curves": curves, "times": wall}


def _probe_seed(cfg: StudyConfig, seed: int, obtained: dict, probe_data: str, info: dict, progress: bool) -> dict:
    """{task: {method: ProbeOutcome}} for every method of one seed (fabnet.probe.pipeline)."""
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.pipeline import embed_splits, probe_outcome
    from fabnet.probe.tasks import TASKS

    pcfg = ProbeConfig(
        batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience, seed=seed
    )
    outcomes = {t: {} for t in TASKS}
    for name, o in obtained.items():
        log(f"seed {seed}: probing {name}", "study")
        emb = embed_splits(o.encoder, probe_data, progress=progress)
        for task in TASKS:
            outcomes[task][name] = probe_outcome(task, emb, config=pcfg, info=info)
    return outcomes


def run_study(cfg: StudyConfig, out: str, *, workers: int = 1, progress: bool = False) -> dict:
    """Run every seed; returns the report dict (also DIR/report.json, DIR/report.md, DIR/figures/).

    out: output directory; the data go to DIR/data and DIR/probe_data, each seed's runs to
    DIR/seed<N>/runs (reused when the same command runs again). workers: processes rendering
    the data. progress: tqdm bars.
    """
    from fabnet.data.index import load_index
    from fabnet.data.labels import label_info
    from fabnet.demo.study_report import summarise, write_study_report
    from fabnet.probe.confidence import confidence_study
    from fabnet.train.baselines import preload

    t_start = time.perf_counter()
    load_start = load_average()
    os.makedirs(os.path.join(out, "figures"), exist_ok=True)
    data, probe_data = os.path.join(out, "data"), os.path.join(out, "probe_data")
    log(f"{cfg.name} study into {out}: seeds {list(cfg.seeds)}, {cfg.steps} steps per method", "study")
    t0 = time.perf_counter()
    synth_training_data(cfg, data, workers, progress)
    synth_probe_set(cfg, probe_data, workers, progress)
    times = {"synth": round(time.perf_counter() - t0, 1)}
    records = load_index(data)
    test_records = [r for r in records if r.split == "test"]
    train_records = [r for r in records if r.split == "train"]
    images = preload(train_records)  # the same frames for every seed's baselines
    info = label_info(probe_data)
    per_seed, outcomes = {}, {}
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        trained = _train_seed(cfg, seed, data, out, train_records, images, progress)
        obtained = trained.pop("obtained")
        trained["confidence"] = {}
        for m in study_methods():
            if "confidence" in m.diagnostics:
                png = os.path.join(out, "figures", f"confidence_{m.name}_seed{seed}.png")
                trained["confidence"][m.name] = confidence_study(
                    obtained[m.name].encoder, test_records, png, rows=cfg.heatmap_samples, seed=seed
                )
        outcomes[seed] = _probe_seed(cfg, seed, obtained, probe_data, info, progress)
        trained["times"]["seed_total"] = round(time.perf_counter() - t0, 1)
        per_seed[seed] = trained
    times["total"] = round(time.perf_counter() - t_start, 1)
    report = summarise(cfg, outcomes, per_seed, records, load_index(probe_data))
    report.update(
        command="fabnet study" + (" --quick" if cfg.name == "quick" else "") + f" --out {out}",
        config={**asdict(cfg), "seeds": list(cfg.seeds)},
        times=times,
        **provenance(load_start),
    )
    write_study_report(report, out)
    log(f"done in {times['total']:.0f} s: {os.path.join(out, 'report.md')}", "study")
    return report


def study_config(quick: bool, seeds=None, steps: int | None = None) -> StudyConfig:
    """The full (or quick) StudyConfig with the command line's overrides."""
    cfg = StudyConfig.quick() if quick else StudyConfig()
    if seeds is not None:
        if len(seeds) < 2:
            raise ValueError(f"seeds must name at least 2 training seeds (a seed sd needs two); got {list(seeds)}")
        cfg = replace(cfg, seeds=tuple(seeds))
    if steps is not None:
        if steps < 2:
            raise ValueError(f"steps must be at least 2 (half shared, half per variant); got {steps}")
        cfg = replace(cfg, steps=steps)
    return cfg


__all__ = ["ABLATIONS", "METHODS", "STUDY_METHODS", "StudyConfig", "StudySchedule", "run_study", "study_config"]
