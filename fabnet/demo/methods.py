"""The methods the demo and the study compare: one ``Method`` record each, in ``METHODS``.

A record says what the method is (name, label, kind, colour), how it is obtained (``obtain``:
FAb-Net through the run's schedule, a baseline through ``fabnet.train.baselines``, raw pixels and
random features as encoders), what the reports do with it (``rival``: the study's claims compare
FAb-Net against it; the kinds ``floor`` and ``ceiling`` bound the gap shares) and where it runs
(``demo``, ``study``). The demo, the study, their figures and reports loop over this table, so a
new method is one record.

A schedule (the demo's ``DemoSchedule``, the study's ``StudySchedule``) decides what differs
between the two runs: how many steps and frames a method gets, and which FAb-Net run a variant
starts from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# Kinds: a FAb-Net variant; a baseline trained on the same frames; a network without training;
# no network at all; the noise floor; the supervised ceiling.
FABNET, TRAINED, UNTRAINED, RAW, FLOOR, CEILING = "fabnet", "trained", "untrained", "raw", "floor", "ceiling"


@dataclass
class Obtained:
    """What a method gave: ``encoder`` (a checkpoint path, or an encoder module), the optimiser
    ``steps`` it took, its training record (``train_result``: a FAb-Net TrainResult; ``losses``:
    a baseline's loss per step) and the seconds it took (``wall_s``)."""

    encoder: Any
    steps: int
    train_result: Any = None
    losses: list = field(default_factory=list)
    wall_s: float = 0.0


class Schedule(Protocol):
    def fabnet(self, ctx: Context, method: Method):
        """Train (or reuse) FAb-Net variant ``method``; its TrainResult."""

    def baseline_budget(self, cfg, method: Method) -> tuple[int, int]:
        """(optimiser steps, batch) of a baseline."""


@dataclass
class Context:
    """One run of methods: its config, data and the methods obtained so far (in table order)."""

    cfg: Any
    schedule: Schedule
    data: str
    runs: str
    train_records: list
    images: Any
    seed: int
    progress: bool
    obtained: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: str
    colour: str
    obtain: Callable[[Context, Method], Obtained]
    sources: int = 0  # FAb-Net: K
    curriculum: bool = False  # FAb-Net: the sorted-loss window
    objective: str | None = None  # baselines: fabnet.train.baselines' method
    rival: bool = False
    demo: bool | Callable[[Any], bool] = False  # a bool, or whether a DemoConfig asks for it
    study: bool = False  # in the study's main comparison
    ablation: bool = False  # in the study's ablation (a FAb-Net variant continued from the main one)
    summary: str = ""  # what it is, for the reports' setup ({size}: the network input side)
    loss_name: str = ""  # a trained baseline's training loss, the y label of its curve

    def describe(self, size: int) -> str:
        return (self.summary or self.label).format(size=size, values=3 * size * size)

    @property
    def diagnostics(self) -> tuple[str, ...]:
        """The studies that read this method's decoders: the warp's validation gain and the
        target-swap study (every FAb-Net variant); the confidences (several sources)."""
        if self.kind != FABNET:
            return ()
        return ("warp", "target_swap") + (("confidence",) if self.sources > 1 else ())


def _obtain_fabnet(ctx: Context, method: Method) -> Obtained:
    result = ctx.schedule.fabnet(ctx, method)
    return Obtained(result.checkpoint, result.step, train_result=result)


def _obtain_baseline(ctx: Context, method: Method) -> Obtained:
    from fabnet.demo.runs import baseline
    from fabnet.train.baselines import BaselineConfig

    cfg = ctx.cfg
    steps, batch = ctx.schedule.baseline_budget(cfg, method)
    options = dict(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    bcfg = BaselineConfig(
        method=method.objective,
        size=cfg.size,
        steps=steps,
        batch_size=batch,
        seed=ctx.seed,
        device=cfg.device,
        **options,
    )
    path = os.path.join(ctx.runs, method.name, "checkpoint.pt")
    result = baseline(bcfg, ctx.train_records, path, ctx.images, ctx.progress)
    return Obtained(result.checkpoint, steps, losses=list(result.losses))


def _obtain_pixels(ctx: Context, method: Method) -> Obtained:
    from fabnet.probe.pixels import PixelEncoder

    return Obtained(PixelEncoder(ctx.cfg.size), 0)


def _obtain_noise(ctx: Context, method: Method) -> Obtained:
    from fabnet.probe.noise import NoiseEncoder

    return Obtained(NoiseEncoder(ctx.cfg.size, seed=ctx.seed), 0)


def _fabnet(name: str, label: str, colour: str, sources: int, curriculum: bool, **where) -> Method:
    return Method(name, label, FABNET, colour, _obtain_fabnet, sources=sources, curriculum=curriculum, **where)


def _baseline(name: str, label: str, kind: str, colour: str, summary: str, **where) -> Method:
    return Method(name, label, kind, colour, _obtain_baseline, objective=name, summary=summary, **where)


_SIMCLR = (
    "contrastive (SimCLR: two crops of 0.55-0.85 of the side with colour distortion, projection 256-128, "
    "InfoNCE at temperature 0.2, the batch's other views as negatives)"
)
_PIXELS = (
    "raw pixels (no network: the {size} x {size} crop itself, {values} values, read by the same probe and "
    "the same cosine retrieval)"
)
_SUPERVISED = (
    "the supervised ceiling (the same encoder trained on the training identities' landmarks, pose, expression "
    "and attributes)"
)

# In the order the runs obtain, probe and tabulate them. The rivals are the paper's: the methods
# its claims compare FAb-Net against (the autoencoder and a contrastive encoder); raw pixels and
# the random-init encoder are reported as diagnostics (how much of a probe's score the input
# itself or the architecture gives), as are the floor and the ceiling.
_TABLE = (
    _fabnet("fabnet_1src", "FAb-Net, 1 source", "tab:blue", 1, False, demo=True, study=True),
    _fabnet("fabnet_1src_more", "FAb-Net, 1 source, continued", "navy", 1, False, ablation=True),
    _fabnet("fabnet_1src_curriculum", "FAb-Net, 1 source + curriculum", "tab:cyan", 1, True, ablation=True),
    _fabnet("fabnet_3src", "FAb-Net, 3 sources", "darkgreen", 3, False, ablation=True),
    _fabnet(
        "fabnet_3src_curriculum", "FAb-Net, 3 sources + curriculum", "tab:green", 3, True, demo=True, ablation=True
    ),
    _baseline(
        "random_init", "random-init encoder", UNTRAINED, "tab:grey",
        "random-init encoder (BatchNorm statistics re-estimated on train frames, no training)",
        demo=True, study=True,
    ),
    _baseline(
        "autoencoder", "autoencoder", TRAINED, "tab:orange", "autoencoder (same encoder + decoder, L1 reconstruction)",
        rival=True, demo=True, study=True, loss_name="L1",
    ),
    _baseline(
        "contrastive", "contrastive (SimCLR)", TRAINED, "tab:red", _SIMCLR, rival=True, study=True, loss_name="InfoNCE"
    ),
    _baseline(
        "rotation", "rotation prediction", TRAINED, "tab:purple", "rotation prediction (4 classes)",
        demo=lambda cfg: cfg.rotation_steps > 0, loss_name="cross-entropy",
    ),
    Method("pixels", "raw pixels", RAW, "tab:brown", _obtain_pixels, demo=True, study=True, summary=_PIXELS),
    Method(
        "noise", "random features (noise floor)", FLOOR, "tab:olive", _obtain_noise, demo=True, study=True,
        summary="random features (256 normal values fixed per frame: the noise floor)",
    ),
    _baseline(
        "supervised", "supervised (ceiling)", CEILING, "tab:pink", _SUPERVISED, study=True, loss_name="multi-task",
    ),
)  # fmt: skip
METHODS: dict[str, Method] = {m.name: m for m in _TABLE}


def label(name: str) -> str:
    """A method's label in reports and figures (the name itself for anything else)."""
    return METHODS[name].label if name in METHODS else name


def demo_methods(cfg) -> list[Method]:
    """The demo's methods for ``cfg`` (a DemoConfig), in table order."""
    return [m for m in METHODS.values() if (m.demo(cfg) if callable(m.demo) else m.demo)]


def study_methods(ablation: bool = False, only=None) -> list[Method]:
    """The study's methods in table order: the main comparison, plus the FAb-Net ablation's
    variants with ``ablation``; ``only`` (names) keeps those of them."""
    methods = [m for m in METHODS.values() if m.study or (ablation and m.ablation)]
    if only is not None:
        unknown = sorted(set(only) - {m.name for m in methods})
        if unknown:
            raise ValueError(f"unknown study method(s) {unknown}; the study's are {[m.name for m in methods]}")
        methods = [m for m in methods if m.name in only]
    return methods


def main_fabnet(methods) -> Method:
    """The FAb-Net the study compares against the rivals: the one its main comparison trains
    from scratch (1 source)."""
    return next(m for m in methods if m.kind == FABNET and m.study)


def headline(methods) -> Method:
    """The FAb-Net variant a run reports as FAb-Net: the paper's model, the most sources with the
    curriculum among ``methods``."""
    fabnet = [m for m in methods if m.kind == FABNET]
    return max(fabnet, key=lambda m: (m.sources, m.curriculum))


def run_methods(ctx: Context, methods, on_start: Callable[[Method], None] | None = None) -> dict[str, Obtained]:
    """Obtain every method in order (``on_start`` is told each one first); {name: Obtained}."""
    for method in methods:
        if on_start is not None:
            on_start(method)
        start = time.perf_counter()
        obtained = method.obtain(ctx, method)
        obtained.wall_s = round(time.perf_counter() - start, 1)
        ctx.obtained[method.name] = obtained
    return ctx.obtained


__all__ = [
    "CEILING",
    "FABNET",
    "FLOOR",
    "METHODS",
    "RAW",
    "TRAINED",
    "UNTRAINED",
    "Context",
    "Method",
    "Obtained",
    "Schedule",
    "demo_methods",
    "headline",
    "label",
    "main_fabnet",
    "run_methods",
    "study_methods",
]
