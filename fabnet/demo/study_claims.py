"""The paper's claims, checked on the study's numbers (fabnet.demo.study_stats).

A claim of superiority holds where the 95 % intervals do not overlap and the gap exceeds twice
the larger seed sd; "better" for the curriculum needs the intervals apart; "not worse" holds
unless the FAb-Net model's interval lies wholly on the worse side. Which methods FAb-Net is
compared against is the method table's (``rival``).
"""

from __future__ import annotations

from fabnet.demo.methods import FABNET, TRAINED, headline, study_methods
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


def claims(probes: dict, warp: dict, confidence: dict) -> list[dict]:
    """The paper's claims, each with ``holds`` and the numbers: FAb-Net (the headline variant)
    ahead of every rival method; its expression AUC; the curriculum at equal steps; more sources
    not worse; the pose-nearest source the most confident; the warp's gain."""
    methods = [m for m in study_methods() if m.name in probes[TASKS[0]]]
    head = headline(methods)
    fab = {t: probes[t].get(head.name) for t in TASKS}
    claims = []
    for other in (m for m in methods if m.rival):
        for task in ("landmarks", "pose"):
            if fab[task] is None or other.name not in probes[task]:
                continue
            theirs = probes[task][other.name]
            c = compare(task, fab[task], theirs)
            holds = c["apart"] and c["gap"] > 0 and c["beyond_two_sd"]
            claims.append(
                {
                    "claim": f"FAb-Net ahead of {other.label} on {task}",
                    "holds": holds,
                    "numbers": f"{c['verdict']}: {fmt(task, fab[task])} vs {fmt(task, theirs)}; "
                    f"gap {c['gap']:+.2f} (+ = FAb-Net better), 2 sd {c['two_sd']:.2f}",
                }
            )
    if fab["expression"] is not None:
        auc = fab["expression"]["auc_mean"]
        claims.append(
            {
                "claim": "FAb-Net expression AUC >= 0.65",
                "holds": bool(auc >= 0.65),
                "numbers": fmt("expression", fab["expression"]),
            }
        )
    fabnet = [m for m in methods if m.kind == FABNET]
    pairs = [(w, wo) for w in fabnet if w.curriculum for wo in fabnet if wo.sources == w.sources and not wo.curriculum]
    for with_c, without in sorted(pairs, key=lambda p: -p[0].sources):
        for task in ("landmarks", "pose"):
            a, b = probes[task].get(with_c.name), probes[task].get(without.name)
            if a is not None and b is not None:
                c = compare(task, a, b)
                claims.append(
                    {
                        "claim": f"the curriculum better at equal steps ({without.label}, {task})",
                        "holds": c["apart"] and c["gap"] > 0,
                        "numbers": f"{fmt(task, a)} with vs {fmt(task, b)} without: {c['verdict']}",
                    }
                )
    fewer = [m for m in fabnet if m.curriculum == head.curriculum and m.sources < head.sources]
    for task in ("landmarks", "pose"):
        if fewer and fab[task] is not None and fewer[0].name in probes[task]:
            theirs = probes[task][fewer[0].name]
            c = compare(task, fab[task], theirs)
            claims.append(
                {
                    "claim": f"{head.sources} sources not worse than {fewer[0].sources} ({task}, both with the "
                    "curriculum)",
                    "holds": c["verdict"] != "behind",
                    "numbers": f"{fmt(task, fab[task])} vs {fmt(task, theirs)}: {c['verdict']}",
                }
            )
    if head.name in confidence:
        share = confidence[head.name]["nearest_pose_share"]
        seeds = ", ".join(f"{100 * v:.1f}" for v in share["per_seed"])
        claims.append(
            {
                "claim": "the pose-nearest source the most confident on > 50 % of pixels",
                "holds": bool(share["mean"] > 0.5),
                "numbers": f"{100 * share['mean']:.1f} % (seeds: {seeds}; chance {100 / head.sources:.1f} %)",
            }
        )
    if head.name in warp:
        g = warp[head.name]["gain_pct"]
        seeds = ", ".join(f"{v:.1f}" for v in g["per_seed"])
        claims.append(
            {
                "claim": "the learned warp at least 30 % below the no-warp L1",
                "holds": bool(g["mean"] >= 30),
                "numbers": f"{g['mean']:.1f} % (seeds: {seeds})",
            }
        )
    return claims


def against_others(probes: dict) -> list[str]:
    """A sentence per trained baseline the claims do not name: where FAb-Net stands against it."""
    methods = [m for m in study_methods() if m.name in probes[TASKS[0]]]
    head = headline(methods)
    lines = []
    for other in (m for m in methods if m.kind == TRAINED and not m.rival):
        pairs = [
            (t, compare(t, probes[t][head.name], probes[t][other.name]))
            for t in TASKS
            if head.name in probes[t] and other.name in probes[t]
        ]
        if pairs:
            lines += [
                "",
                f"Against the {other.label} encoder, FAb-Net ({head.label.split(', ', 1)[-1]}) is "
                + "; ".join(
                    f"{c['verdict']} it on {t} ({fmt(t, probes[t][head.name])} vs {fmt(t, probes[t][other.name])})"
                    for t, c in pairs
                )
                + ".",
            ]
    return lines


__all__ = ["against_others", "claims", "compare", "fmt"]
