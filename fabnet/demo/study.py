"""``fabnet study``: FAb-Net against the paper's rivals over several training seeds.

One synthetic training set and one labelled probe set of unseen identities (as ``fabnet demo``),
then for every training seed:

1. **The main comparison** at equal steps and batch: FAb-Net with one source, trained from the
   near-identity warp; the rivals the paper compares against (the autoencoder and the
   contrastive SimCLR encoder); and as diagnostics the random-init encoder, raw pixels, random
   features (the noise floor) and the supervised ceiling (the same encoder trained on the
   labels).
2. **The ablation** (``ablation_steps`` > 0; the GPU preset): the paper's schedule continued from
   the main 1-source model for ``ablation_steps`` more steps of ``ablation_batch`` in four ways: 1
   source, 1 source + curriculum, 3 sources, 3 sources + curriculum. They compare nearly
   converged models at the paper's batch of 32; a short CPU budget would compare models still
   learning, so the CPU preset leaves it out.
3. Linear probes of every frozen embedding on the probe set's test identities, absolute and
   within identity (``fabnet.probe.pipeline.probe_outcome``); the oracle warp budget of the test
   identities with the learned warp's share of it (``fabnet.data.budget``); the 3-source models'
   confidence selectivity.

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
from fabnet.demo.methods import FABNET, METHODS, Context, Method, main_fabnet, run_methods, study_methods
from fabnet.demo.runs import load_average, log, provenance, synth_probe_set, synth_training_data, train_fabnet

# The study's methods by name, in table order (the records: fabnet.demo.methods.METHODS).
STUDY_METHODS = tuple(m.name for m in study_methods())
# The FAb-Net variants of the ablation: (sources, curriculum) of the continuation.
ABLATIONS = {m.name: (m.sources, m.curriculum) for m in study_methods(ablation=True) if m.ablation}
PRESETS = ("cpu", "gpu", "quick")


@dataclass
class StudyConfig(SyntheticRunConfig):
    """Sizes of a study (the shared fields: ``SyntheticRunConfig``; ``seed`` draws the data
    only). ``steps`` and ``batch``: every method's optimiser steps and frames (pairs) per step in
    the main comparison. ``ablation_steps`` (0: no ablation), ``ablation_batch``: the ablation's
    continuations. ``seeds``: the training seeds (initialisation, batches, probes).
    ``oracle_pairs``: test pairs of the oracle budget. ``methods``: only these (None: all).
    ``beside``: the report.json of another study shown beside this one (e.g. the camera-light
    setting)."""

    identities: int = 300
    # 2000 people, 4 frames each: 600 test identities, so the within-identity intervals resolve
    # differences of a few percent (the study of 2026-12-02 had 150 and its intervals overlapped).
    probe_identities: int = 2000
    steps: int = 3000
    batch: int = 16
    # The main run cuts its LR only after 16 validation rounds (800 steps) without improvement.
    patience: int = 16
    ablation_steps: int = 0
    ablation_batch: int = 32
    # The curriculum's plateau in the ablation: 3 validation rounds without improvement shift the window.
    ablation_patience: int = 3
    bootstrap: int = 1000
    seeds: tuple = (0, 1, 2)
    oracle_pairs: int = 256
    methods: tuple | None = None
    beside: str | None = None
    name: str = "cpu"

    @classmethod
    def cpu(cls) -> StudyConfig:
        return cls()

    @classmethod
    def gpu(cls) -> StudyConfig:
        """One H100 / H200: 64 px inputs, the paper's batch of 32, the ablation included. Rendering
        96 px frames on 16 cores takes about 2 minutes of it (measured rate: ~10 frames/s per
        core at 96 px); the training steps are estimated, not yet measured (docs/FINDINGS.md)."""
        return cls(
            image_size=96,
            size=64,
            identities=200,
            steps=3000,
            batch=32,
            ablation_steps=1500,
            val_every=100,
            device="cuda",
            name="gpu",
        )

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
            ablation_steps=8,
            ablation_batch=4,
            val_every=4,
            val_batches=2,
            patience=2,
            ablation_patience=1,
            probe_max_epochs=30,
            probe_patience=5,
            bootstrap=200,
            seeds=(0, 1),
            oracle_pairs=16,
            heatmap_samples=2,
            name="quick",
        )

    def methods_run(self) -> list[Method]:
        """The methods this study obtains, in table order (ValueError for an unknown name, or for
        ablation variants without the main FAb-Net they continue)."""
        methods = study_methods(ablation=self.ablation_steps > 0, only=self.methods)
        names = [m.name for m in methods]
        if any(m.ablation and not m.study for m in methods) and not any(m.kind == FABNET and m.study for m in methods):
            raise ValueError(
                f"the ablation's variants continue the main FAb-Net, so methods must include it; got {names}"
            )
        return methods


class StudySchedule:
    """Every method of the main comparison ``steps`` steps of ``batch``; the ablation's variants
    continue the main FAb-Net for ``ablation_steps`` of ``ablation_batch``."""

    def fabnet(self, ctx: Context, method: Method):
        cfg = ctx.cfg
        if method.study:
            log(f"seed {ctx.seed}: {method.name}, {cfg.steps} steps", "study")
            steps, batch, init, patience = cfg.steps, cfg.batch, None, cfg.patience
        else:
            main = main_fabnet(METHODS[n] for n in ctx.obtained)
            log(f"seed {ctx.seed}: {method.name}, {cfg.ablation_steps} steps from {main.name}", "study")
            steps, batch, patience = cfg.ablation_steps, cfg.ablation_batch, cfg.ablation_patience
            init = ctx.obtained[main.name].encoder
        return train_fabnet(
            cfg,
            ctx.data,
            os.path.join(ctx.runs, method.name),
            num_sources=method.sources,
            steps=steps,
            batch=batch,
            curriculum=method.curriculum,
            init=init,
            patience=patience,
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
    ctx = Context(tcfg, StudySchedule(), data, runs, train_records, images, seed, progress)

    def on_start(method: Method) -> None:
        if method.kind != FABNET:
            log(f"seed {seed}: baseline {method.name}", "study")

    obtained = run_methods(ctx, cfg.methods_run(), on_start)
    wall, warp, curves = {}, {}, {}
    for name, o in obtained.items():
        if isinstance(o.encoder, str):
            wall[name] = o.wall_s
        if o.train_result is not None:
            metrics = o.train_result.metrics
            warp[name] = {"best_val_l1": o.train_result.best_val, "zero_flow_val_l1": zero_flow_loss(metrics)}
            curves[name] = _val_curve(metrics, offset=0 if METHODS[name].study else cfg.steps)
    return {"obtained": obtained, "warp": warp, "val_curves": curves, "times": wall}


def _probe_seed(cfg: StudyConfig, seed: int, obtained: dict, probe_data: str, info: dict, progress: bool) -> dict:
    """{"absolute": {task: {method: ProbeOutcome}}, "within_identity": {task: {method: ...}}} for
    every method of one seed (fabnet.probe.pipeline)."""
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.pipeline import WITHIN_IDENTITY_TASKS, embed_splits, probe_outcome
    from fabnet.probe.tasks import TASKS

    pcfg = ProbeConfig(
        batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience, seed=seed
    )
    outcomes = {"absolute": {t: {} for t in TASKS}, "within_identity": {t: {} for t in WITHIN_IDENTITY_TASKS}}
    for name, o in obtained.items():
        log(f"seed {seed}: probing {name}", "study")
        emb = embed_splits(o.encoder, probe_data, progress=progress)
        for task in TASKS:
            outcomes["absolute"][task][name] = probe_outcome(task, emb, config=pcfg, info=info)
        for task in WITHIN_IDENTITY_TASKS:
            outcomes["within_identity"][task][name] = probe_outcome(
                task, emb, config=pcfg, info=info, within_identity=True
            )
    return outcomes


def _oracle(cfg: StudyConfig, data: str, main_checkpoints: list[str]) -> dict:
    """The oracle budget of the training data's test identities, with the main FAb-Net of every
    seed (fabnet.data.budget.oracle_budget)."""
    from fabnet.data.budget import oracle_budget

    log(f"oracle budget on {cfg.oracle_pairs} test pairs", "study")
    return oracle_budget(
        data,
        size=cfg.size,
        pairs=cfg.oracle_pairs,
        seed=cfg.seed,
        split="test",
        checkpoint=main_checkpoints or None,
        bootstrap=cfg.bootstrap,
    )


def run_study(
    cfg: StudyConfig, out: str, *, workers: int = 1, progress: bool = False, command: str | None = None
) -> dict:
    """Run every seed; returns the report dict (also DIR/report.json, DIR/report.md, DIR/figures/).

    out: output directory; the data go to DIR/data and DIR/probe_data, each seed's runs to
    DIR/seed<N>/runs (reused when the same command runs again). workers: processes rendering
    the data. progress: tqdm bars. command: the command line, for the report.
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
    methods = cfg.methods_run()
    log(f"{cfg.name} study into {out}: seeds {list(cfg.seeds)}, {len(methods)} methods", "study")
    t0 = time.perf_counter()
    synth_training_data(cfg, data, workers, progress)
    synth_probe_set(cfg, probe_data, workers, progress)
    times = {"synth": round(time.perf_counter() - t0, 1)}
    records = load_index(data)
    test_records = [r for r in records if r.split == "test"]
    train_records = [r for r in records if r.split == "train"]
    images = preload(train_records) if any(m.objective for m in methods) else None
    info = label_info(probe_data)
    per_seed, outcomes, main_checkpoints = {}, {}, []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        trained = _train_seed(cfg, seed, data, out, train_records, images, progress)
        obtained = trained.pop("obtained")
        main_checkpoints += [obtained[m.name].encoder for m in methods if m.kind == FABNET and m.study]
        trained["confidence"] = {}
        for m in methods:
            if "confidence" in m.diagnostics:
                png = os.path.join(out, "figures", f"confidence_{m.name}_seed{seed}.png")
                trained["confidence"][m.name] = confidence_study(
                    obtained[m.name].encoder, test_records, png, rows=cfg.heatmap_samples, seed=seed
                )
        outcomes[seed] = _probe_seed(cfg, seed, obtained, probe_data, info, progress)
        trained["times"]["seed_total"] = round(time.perf_counter() - t0, 1)
        per_seed[seed] = trained
    t0 = time.perf_counter()
    oracle = _oracle(cfg, data, main_checkpoints)
    times["oracle"] = round(time.perf_counter() - t0, 1)
    times["total"] = round(time.perf_counter() - t_start, 1)
    report = summarise(cfg, outcomes, per_seed, records, load_index(probe_data), oracle)
    if cfg.beside:
        report["beside"] = read_beside(cfg.beside)
    report.update(
        command=command or f"fabnet study --preset {cfg.name} --out {out}",
        config={**asdict(cfg), "seeds": list(cfg.seeds)},
        times=times,
        **provenance(load_start),
    )
    write_study_report(report, out)
    log(f"done in {times['total']:.0f} s: {os.path.join(out, 'report.md')}", "study")
    return report


def read_beside(path: str) -> dict:
    """The parts of another study's report.json (``path``: the file or its directory) that this
    report shows beside its own."""
    import json

    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    try:
        with open(path) as fh:
            other = json.load(fh)
    except (OSError, ValueError) as err:
        raise ValueError(f"beside: cannot read the study report {path!r} ({err})") from None
    keys = ("command", "config", "seeds", "probes", "probes_within_identity", "oracle")
    missing = [k for k in keys[:4] if k not in other]
    if missing:
        raise ValueError(f"beside: {path!r} is not a study report.json (no {missing})")
    return {k: other.get(k) for k in keys}


def study_config(
    preset: str = "cpu", *, seeds=None, steps: int | None = None, light: str | None = None, methods=None, beside=None
) -> StudyConfig:
    """The preset's StudyConfig (``PRESETS``) with the command line's overrides."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
    cfg = getattr(StudyConfig, preset)()
    if seeds is not None:
        if len(seeds) < 1 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must name distinct training seeds, at least one; got {list(seeds)}")
        cfg = replace(cfg, seeds=tuple(seeds))
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1; got {steps}")
        cfg = replace(cfg, steps=steps)
    if light is not None:
        from fabnet.data.synth import LIGHTS

        if light not in LIGHTS:
            raise ValueError(f"light must be one of {LIGHTS}; got {light!r}")
        cfg = replace(cfg, light=light)
    if methods is not None:
        cfg = replace(cfg, methods=tuple(methods))
        cfg.methods_run()  # names every unknown method now, not after the data are rendered
    if beside is not None:
        read_beside(beside)  # a bad path fails now, not after an hour of training
        cfg = replace(cfg, beside=str(beside))
    return cfg


__all__ = [
    "ABLATIONS",
    "METHODS",
    "PRESETS",
    "STUDY_METHODS",
    "StudyConfig",
    "StudySchedule",
    "read_beside",
    "run_study",
    "study_config",
]
