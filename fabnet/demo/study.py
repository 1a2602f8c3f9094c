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
from fabnet.demo.runs import baseline, load_average, log, provenance, synth_probe_set, synth_training_data, train_fabnet

# The four ablation variants: (sources, curriculum) in the second half.
ABLATIONS = {"fabnet_1src": (1, False), "fabnet_1src_curriculum": (1, True), "fabnet_3src": (3, False),
             "fabnet_3src_curriculum": (3, True)}  # fmt: skip
TRAINED_BASELINES = ("autoencoder", "contrastive", "supervised")
STUDY_METHODS = (*ABLATIONS, "autoencoder", "contrastive", "random_init", "pixels", "noise", "supervised")


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
        return cls(identities=24, tracks_per_identity=2, frames_per_track=8, image_size=48, probe_identities=40,
                   probe_frames=3, steps=16, batch=4, val_every=4, val_batches=2, patience=1,
                   patience_first_half=2, probe_max_epochs=30, probe_patience=5, bootstrap=200, seeds=(0, 1),
                   heatmap_samples=2, name="quick")  # fmt: skip


def _train_seed(cfg: StudyConfig, seed: int, data: str, out: str, train_records, images, progress: bool) -> dict:
    """The checkpoints, validation figures and wall times of one training seed (``images``: the
    training frames, ``fabnet.train.baselines.preload(train_records)``, for the baselines)."""
    from fabnet.train.baselines import BaselineConfig
    from fabnet.train.figures import zero_flow_loss

    runs = os.path.join(out, f"seed{seed}", "runs")
    tcfg = replace(cfg, seed=seed)  # the data seed gives way to the training seed
    half = cfg.steps // 2
    wall, checkpoints, warp, curves = {}, {}, {}, {}
    t0 = time.perf_counter()
    log(f"seed {seed}: shared first half, 1 source, {half} steps", "study")
    fork = train_fabnet(tcfg, data, os.path.join(runs, "fabnet_first_half"), num_sources=1, steps=half,
                        batch=cfg.batch, curriculum=False, init=None, patience=cfg.patience_first_half,
                        progress=progress)  # fmt: skip
    wall["fabnet_first_half"] = round(time.perf_counter() - t0, 1)
    for name, (k, curriculum) in ABLATIONS.items():
        log(f"seed {seed}: {name}, {cfg.steps - half} more steps", "study")
        t0 = time.perf_counter()
        res = train_fabnet(tcfg, data, os.path.join(runs, name), num_sources=k, steps=cfg.steps - half,
                           batch=cfg.batch, curriculum=curriculum, init=fork.checkpoint, patience=cfg.patience,
                           progress=progress)  # fmt: skip
        wall[name] = round(time.perf_counter() - t0, 1)
        checkpoints[name] = res.checkpoint
        warp[name] = {"best_val_l1": res.best_val, "zero_flow_val_l1": zero_flow_loss(res.metrics)}
        curves[name] = [(half + m["step"], m["val_loss"]) for m in res.metrics if m.get("kind") == "val"]
    curves["fabnet_first_half"] = [(m["step"], m["val_loss"]) for m in fork.metrics if m.get("kind") == "val"]
    for method in ("random_init", *TRAINED_BASELINES):
        steps = 0 if method == "random_init" else cfg.steps
        log(f"seed {seed}: baseline {method}" + (f", {steps} steps" if steps else ""), "study")
        t0 = time.perf_counter()
        bcfg = BaselineConfig(method=method, size=cfg.size, steps=steps, batch_size=cfg.batch,
                              optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay, seed=seed)  # fmt: skip
        res = baseline(bcfg, train_records, os.path.join(runs, method, "checkpoint.pt"), images, progress)
        wall[method] = round(time.perf_counter() - t0, 1)
        checkpoints[method] = res.checkpoint
    return {"checkpoints": checkpoints, "warp": warp, "val_curves": curves, "times": wall}


def _probe_seed(cfg: StudyConfig, seed: int, checkpoints: dict, probe_data: str, info: dict,
                progress: bool) -> dict:  # fmt: skip
    """{task: {method: ProbeOutcome}} for every method of one seed (fabnet.probe.pipeline)."""
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.noise import NoiseEncoder
    from fabnet.probe.pipeline import embed_splits, probe_outcome
    from fabnet.probe.pixels import PixelEncoder
    from fabnet.probe.tasks import TASKS

    pcfg = ProbeConfig(batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience,
                       seed=seed)  # fmt: skip
    encoders = {**checkpoints, "pixels": PixelEncoder(cfg.size), "noise": NoiseEncoder(cfg.size, seed=seed)}
    outcomes = {t: {} for t in TASKS}
    for method in [m for m in STUDY_METHODS if m in encoders]:
        log(f"seed {seed}: probing {method}", "study")
        emb = embed_splits(encoders[method], probe_data, progress=progress)
        for task in TASKS:
            outcomes[task][method] = probe_outcome(task, emb, config=pcfg, info=info)
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
        trained["confidence"] = {}
        for name in ("fabnet_3src", "fabnet_3src_curriculum"):
            png = os.path.join(out, "figures", f"confidence_{name}_seed{seed}.png")
            trained["confidence"][name] = confidence_study(trained["checkpoints"][name], test_records, png,
                                                           rows=cfg.heatmap_samples, seed=seed)  # fmt: skip
        outcomes[seed] = _probe_seed(cfg, seed, trained["checkpoints"], probe_data, info, progress)
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


__all__ = ["ABLATIONS", "STUDY_METHODS", "StudyConfig", "run_study", "study_config"]
