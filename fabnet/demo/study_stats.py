"""The study's numbers: each metric's seed mean with an identity-bootstrap interval, the
comparisons between methods, the shares of the floor-to-ceiling gap, and the report dict.

Every probe metric is the mean over training seeds of the test metric. Its 95 % interval comes
from one bootstrap over test identities applied to all seeds at once (each resample scores every
seed's predictions on the same drawn identities and averages them), so it measures how much the
seed mean depends on which people were tested; the seeds' standard deviation beside it measures
how much it depends on training. A comparison says "ahead" only where the two intervals do not
overlap.
"""

from __future__ import annotations

import numpy as np

from fabnet.demo.config import PROBE_SEED_OFFSET
from fabnet.demo.methods import CEILING, FLOOR, METHODS
from fabnet.demo.study_claims import claims
from fabnet.probe.tasks import MAIN_METRIC, TASKS

# Extra per-task numbers averaged over seeds (beside the main metric).
EXTRA = {"pose": ("mae_yaw", "mae_pitch", "mae_roll"), "expression": ("accuracy",), "landmarks": (), "attributes": ()}


def seed_mean(outcomes: list, task: str, resamples: int) -> dict:
    """Mean over seeds of ``task``'s metrics for one method, with the identity-bootstrap interval
    of the main metric's seed mean, the seeds' sd and the per-seed values.

    outcomes: one ``fabnet.probe.pipeline.ProbeOutcome`` per seed, all on the same test frames.
    """
    from fabnet.probe.intervals import identity_bootstrap

    main = MAIN_METRIC[task]
    ids = outcomes[0].identities
    for o in outcomes[1:]:
        if not np.array_equal(o.identities, ids):
            raise ValueError("the seeds' outcomes must score the same test frames")
    scores = [o.score() for o in outcomes]
    values = [s[main] for s in scores]
    out = {main: float(np.mean(values))}
    for key in EXTRA[task]:
        out[key] = float(np.mean([s[key] for s in scores]))

    def metric(rows):
        return float(np.mean([o.score(rows)[main] for o in outcomes]))

    out["ci95"] = {main: identity_bootstrap(metric, ids, resamples=resamples, seed=0)}
    out["seed_sd"] = {main: float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")}
    out["per_seed"] = {main: [float(v) for v in values]}
    out["test_identities"] = int(len(np.unique(ids)))
    return out


def gap_share(task: str, probes: dict, method: str) -> float | None:
    """(method - floor) / (ceiling - floor) on the main metric: 0 = the floor method (random
    features), 1 = the ceiling method (the supervised encoder); None without both rows."""
    main = MAIN_METRIC[task]
    row = probes.get(task, {})
    floors = [n for n in row if n in METHODS and METHODS[n].kind == FLOOR]
    ceilings = [n for n in row if n in METHODS and METHODS[n].kind == CEILING]
    if not floors or not ceilings or method not in row:
        return None
    floor, ceiling = row[floors[0]][main], row[ceilings[0]][main]
    if ceiling == floor:
        return None
    return float((row[method][main] - floor) / (ceiling - floor))


def per_seed_summary(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "per_seed": [float(v) for v in values],
    }


def _seed_means(outcomes: dict, seeds: list, kind: str, resamples: int) -> dict:
    """{task: {method: seed_mean}} of one kind of probe ("absolute" or "within_identity")."""
    first = outcomes[seeds[0]][kind]
    return {
        task: {m: seed_mean([outcomes[s][kind][task][m] for s in seeds], task, resamples) for m in first[task]}
        for task in first
    }


def _warp(per_seed: dict, seeds: list) -> dict:
    warp = {}
    for name in per_seed[seeds[0]]["warp"]:
        best = [per_seed[s]["warp"][name]["best_val_l1"] for s in seeds]
        zero = [per_seed[s]["warp"][name]["zero_flow_val_l1"] for s in seeds]
        if any(z is None for z in zero):
            continue
        warp[name] = {
            "best_val_l1": per_seed_summary(best),
            "zero_flow_val_l1": per_seed_summary(zero),
            "gain_pct": per_seed_summary([100 * (1 - b / z) for b, z in zip(best, zero)]),
        }
    return warp


def _confidence(per_seed: dict, seeds: list) -> dict:
    confidence = {}
    for name in per_seed[seeds[0]]["confidence"]:
        stats = [per_seed[s]["confidence"][name] for s in seeds]
        if all(stats):
            confidence[name] = {
                key: per_seed_summary([st[key] for st in stats])
                for key in ("nearest_pose_share", "max_confidence_mean")
            }
            confidence[name]["samples"] = stats[0]["samples"]
    return confidence


def summarise(cfg, outcomes: dict, per_seed: dict, records, probe_records, oracle: dict | None = None) -> dict:
    """The report dict from ``{seed: {"absolute" | "within_identity": {task: {method:
    ProbeOutcome}}}}``, the seeds' training and the oracle budget (fabnet.data.budget)."""
    seeds = list(outcomes)
    probes = _seed_means(outcomes, seeds, "absolute", cfg.bootstrap)
    within = _seed_means(outcomes, seeds, "within_identity", cfg.bootstrap)
    warp, confidence = _warp(per_seed, seeds), _confidence(per_seed, seeds)
    shares = {t: {m: gap_share(t, probes, m) for m in probes[t]} for t in TASKS}
    probe_test = sorted({r.identity for r in probe_records if r.split == "test"})
    sizes = {
        "identities": cfg.identities,
        "tracks_per_identity": cfg.tracks_per_identity,
        "frames_per_track": cfg.frames_per_track,
        "frames": len(records),
        "train_identities": len({r.identity for r in records if r.split == "train"}),
        "probe_identities": cfg.probe_identities,
        "test_identities": len(probe_test),
        "network_input": cfg.size,
        "embedding_dim": 256,
        "steps": cfg.steps,
        "batch": cfg.batch,
        "ablation_steps": cfg.ablation_steps,
        "ablation_batch": cfg.ablation_batch,
    }
    return {
        "seeds": {
            "training": seeds,
            "probes": seeds,
            "data": cfg.seed,
            "probe_set": cfg.seed + PROBE_SEED_OFFSET,
        },
        "sizes": sizes,
        "probes": probes,
        "probes_within_identity": within,
        "gap_share": shares,
        "oracle": oracle or {},
        "warp": warp,
        "confidence": confidence,
        "claims": claims(probes, within, warp, confidence, oracle or {}),
        "per_seed": {
            str(s): {
                "times": per_seed[s]["times"],
                "warp": per_seed[s]["warp"],
                "confidence": per_seed[s]["confidence"],
            }
            for s in seeds
        },
        "val_curves": {str(s): per_seed[s]["val_curves"] for s in seeds},
    }


__all__ = ["EXTRA", "gap_share", "seed_mean", "summarise"]
