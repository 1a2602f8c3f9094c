"""The paper's claims, checked on the study's numbers (fabnet.demo.study_stats).

A claim of superiority ("ahead of") holds where the 95 % intervals do not overlap and the gap
exceeds twice the larger seed sd; "ahead of or level with" and "not worse" hold unless FAb-Net's
interval lies wholly on the worse side; "better" for the curriculum needs the intervals apart.
Which methods FAb-Net is compared against is the method table's (``rival``: the paper's
autoencoder and contrastive encoder); the others are diagnostics, described, not claimed against.
"""

from __future__ import annotations

import math

from fabnet.demo.methods import CEILING, FABNET, FLOOR, headline, main_fabnet, study_methods
from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS


def compare(task: str, a: dict, b: dict) -> dict:
    """How method ``a`` stands against ``b`` on ``task``'s main metric: the gap (positive = ``a``
    better), whether the 95 % intervals are apart and whether the gap exceeds 2 seed sd."""
    main = MAIN_METRIC[task]
    sign = -1.0 if LOWER_IS_BETTER[main] else 1.0
    gap = sign * (a[main] - b[main])
    (alo, ahi), (blo, bhi) = a["ci95"][main], b["ci95"][main]
    apart = ahi < blo or bhi < alo
    sd = max(a["seed_sd"][main], b["seed_sd"][main])
    return {
        "gap": gap,
        "apart": bool(apart),
        "two_sd": 2 * sd,
        "beyond_two_sd": bool(abs(gap) > 2 * sd),
        "verdict": ("ahead of" if gap > 0 else "behind") if apart else "level with",
    }


def fmt(task: str, m: dict) -> str:
    main = MAIN_METRIC[task]
    lo, hi = m["ci95"][main]
    digits = 3 if "auc" in main else 2
    return f"{m[main]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# The learned warp's share of the oracle's gain over not warping that the claim asks for.
WARP_SHARE = 0.6


def _claim(claim: str, holds: bool, numbers: str) -> dict:
    return {"claim": claim, "holds": bool(holds), "numbers": numbers}


def _versus(task: str, ours: dict, theirs: dict, c: dict) -> str:
    return (
        f"{c['verdict']}: {fmt(task, ours)} vs {fmt(task, theirs)}; gap {c['gap']:+.2f} (+ = FAb-Net better), "
        f"2 sd {c['two_sd']:.2f}"
    )


def _rival_claims(fab, rivals, probes: dict, within: dict) -> list[dict]:
    """Ahead of each rival within identity; ahead of or level with it in absolute terms."""
    out = []
    for other in rivals:
        for task in ("landmarks", "pose"):
            for kind, table in (("within-identity", within), ("absolute", probes)):
                ours, theirs = table.get(task, {}).get(fab.name), table.get(task, {}).get(other.name)
                if ours is None or theirs is None:
                    continue
                c = compare(task, ours, theirs)
                if kind == "within-identity":
                    holds = c["apart"] and c["gap"] > 0 and c["beyond_two_sd"]
                    claim = f"FAb-Net ahead of {other.label} on within-identity {task}"
                else:
                    holds = c["verdict"] != "behind"
                    claim = f"FAb-Net ahead of or level with {other.label} on absolute {task}"
                out.append(_claim(claim, holds, _versus(task, ours, theirs, c)))
    return out


def _ablation_claims(methods, probes: dict, confidence: dict) -> list[dict]:
    """The curriculum at equal steps; more sources not worse; the pose-nearest source chosen."""
    fabnet = [m for m in methods if m.kind == FABNET and m.ablation]
    if not fabnet:
        return []
    out = []
    head = headline(fabnet)
    pairs = [(w, wo) for w in fabnet if w.curriculum for wo in fabnet if wo.sources == w.sources and not wo.curriculum]
    for with_c, without in sorted(pairs, key=lambda p: -p[0].sources):
        for task in ("landmarks", "pose"):
            a, b = probes[task].get(with_c.name), probes[task].get(without.name)
            if a is not None and b is not None:
                c = compare(task, a, b)
                out.append(
                    _claim(
                        f"the curriculum better at equal steps ({without.label}, {task})",
                        c["apart"] and c["gap"] > 0,
                        f"{fmt(task, a)} with vs {fmt(task, b)} without: {c['verdict']}",
                    )
                )
    fewer = [m for m in fabnet if m.curriculum == head.curriculum and m.sources < head.sources]
    for task in ("landmarks", "pose"):
        ours = probes[task].get(head.name)
        if fewer and ours is not None and fewer[0].name in probes[task]:
            theirs = probes[task][fewer[0].name]
            c = compare(task, ours, theirs)
            out.append(
                _claim(
                    f"{head.sources} sources not worse than {fewer[0].sources} ({task}, both with the curriculum)",
                    c["verdict"] != "behind",
                    f"{fmt(task, ours)} vs {fmt(task, theirs)}: {c['verdict']}",
                )
            )
    if head.name in confidence:
        share = confidence[head.name]["nearest_pose_share"]
        seeds = ", ".join(f"{100 * v:.1f}" for v in share["per_seed"])
        out.append(
            _claim(
                "the pose-nearest source the most confident on > 50 % of pixels",
                share["mean"] > 0.5,
                f"{100 * share['mean']:.1f} % (seeds: {seeds}; chance {100 / head.sources:.1f} %)",
            )
        )
    return out


def claims(probes: dict, within: dict, warp: dict, confidence: dict, oracle: dict) -> list[dict]:
    """The paper's claims, each with ``holds`` and the numbers: the main FAb-Net ahead of every
    rival within identity and not behind it in absolute terms; its learned warp's share of the
    oracle gain; and, with the ablation, the curriculum, more sources and the confidences."""
    methods = [m for m in study_methods(ablation=True) if m.name in probes[TASKS[0]]]
    out = []
    if any(m.kind == FABNET and m.study for m in methods):
        out += _rival_claims(main_fabnet(methods), [m for m in methods if m.rival], probes, within)
    if oracle.get("share") is not None:
        each = ", ".join(f"{100 * v:.0f}" for v in oracle["share_each"])
        lo, hi = oracle["share_ci95"]
        out.append(
            _claim(
                f"the learned warp reaches >= {WARP_SHARE:.0%} of the oracle's gain over not warping",
                oracle["share"] >= WARP_SHARE,
                f"{100 * oracle['share']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}] (seeds: {each}); L1 "
                f"{oracle['no_warp_l1']:.4f} not warping, {oracle['learned_l1']:.4f} learned, "
                f"{oracle['oracle_l1']:.4f} oracle",
            )
        )
    return out + _ablation_claims(methods, probes, confidence)


def against_others(probes: dict, within: dict) -> list[str]:
    """A sentence per diagnostic method (neither rival, floor nor ceiling): where the main FAb-Net
    stands against it, within identity and in absolute terms; and FAb-Net's expression AUC."""
    methods = [m for m in study_methods(ablation=True) if m.name in probes[TASKS[0]]]
    if not any(m.kind == FABNET and m.study for m in methods):
        return []
    fab = main_fabnet(methods)
    lines = []
    others = [m for m in methods if m.kind not in (FABNET, FLOOR, CEILING) and not m.rival]
    for other in others:
        parts = []
        for kind, table in (("within identity", within), ("absolute", probes)):
            for task in ("landmarks", "pose", "expression"):
                row = table.get(task, {})
                if fab.name in row and other.name in row:
                    c = compare(task, row[fab.name], row[other.name])
                    parts.append(
                        f"{c['verdict']} it on {kind} {task} ({fmt(task, row[fab.name])} vs "
                        f"{fmt(task, row[other.name])})"
                    )
        if parts:
            lines += ["", f"Against the {other.label}, {fab.label} is " + "; ".join(parts) + "."]
    expression = probes.get("expression", {}).get(fab.name)
    if expression is not None and not math.isnan(expression["auc_mean"]):
        lines += ["", f"{fab.label}'s expression AUC (absolute): {fmt('expression', expression)} (0.5 = chance)."]
    return lines


__all__ = ["against_others", "claims", "compare", "fmt"]
