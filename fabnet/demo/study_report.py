"""The study's numbers and report: seed means with intervals, the paper's claims checked.

Every probe metric is the mean over training seeds of the test metric. Its 95 % interval comes
from one bootstrap over test identities applied to all seeds at once (each resample scores every
seed's predictions on the same drawn identities and averages them), so it measures how much the
seed mean depends on which people were tested; the seeds' standard deviation beside it measures
how much it depends on training. A comparison says "ahead" only where the two intervals do not
overlap, and a claim of the paper holds only where, in addition, the gap exceeds twice the larger
seed sd.
"""

from __future__ import annotations

import os

import numpy as np

from fabnet.demo.config import METHOD_LABELS, PROBE_SEED_OFFSET
from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS

FABNET = "fabnet_3src_curriculum"
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


def compare(task: str, a: dict, b: dict) -> dict:
    """How method ``a`` stands against ``b`` on ``task``'s main metric: the gap (positive = ``a``
    better), whether the 95 % intervals are apart and whether the gap exceeds 2 seed sd."""
    main = MAIN_METRIC[task]
    sign = -1.0 if LOWER_IS_BETTER[main] else 1.0
    gap = sign * (a[main] - b[main])
    (alo, ahi), (blo, bhi) = a["ci95"][main], b["ci95"][main]
    apart = ahi < blo or bhi < alo
    sd = max(a["seed_sd"][main], b["seed_sd"][main])
    return {"gap": gap, "apart": bool(apart), "two_sd": 2 * sd, "beyond_two_sd": bool(abs(gap) > 2 * sd),
            "verdict": ("ahead of" if gap > 0 else "behind") if apart else "level with"}  # fmt: skip


def gap_share(task: str, probes: dict, method: str) -> float | None:
    """(method - floor) / (ceiling - floor) on the main metric: 0 = random features, 1 = the
    supervised encoder; None without both rows."""
    main = MAIN_METRIC[task]
    row = probes.get(task, {})
    if "noise" not in row or "supervised" not in row or method not in row:
        return None
    floor, ceiling = row["noise"][main], row["supervised"][main]
    if ceiling == floor:
        return None
    return float((row[method][main] - floor) / (ceiling - floor))


def _fmt(task: str, m: dict) -> str:
    main = MAIN_METRIC[task]
    lo, hi = m["ci95"][main]
    digits = 3 if "auc" in main else 2
    return f"{m[main]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _claims(probes: dict, warp: dict, confidence: dict) -> list[dict]:
    """The paper's claims as the issue states them, each with ``holds`` and the numbers."""
    claims = []
    fab = {t: probes[t].get(FABNET) for t in TASKS}
    for other in ("random_init", "pixels", "autoencoder"):
        for task in ("landmarks", "pose"):
            if fab[task] is None or other not in probes[task]:
                continue
            c = compare(task, fab[task], probes[task][other])
            holds = c["apart"] and c["gap"] > 0 and c["beyond_two_sd"]
            claims.append({"claim": f"FAb-Net ahead of {METHOD_LABELS[other]} on {task}", "holds": holds,
                           "numbers": f"{c['verdict']}: {_fmt(task, fab[task])} vs {_fmt(task, probes[task][other])}; "
                                      f"gap {c['gap']:+.2f} (+ = FAb-Net better), 2 sd {c['two_sd']:.2f}"})  # fmt: skip
    if fab["expression"] is not None:
        auc = fab["expression"]["auc_mean"]
        claims.append({"claim": "FAb-Net expression AUC >= 0.65", "holds": bool(auc >= 0.65),
                       "numbers": _fmt("expression", fab["expression"])})  # fmt: skip
    for with_c, without in (("fabnet_3src_curriculum", "fabnet_3src"), ("fabnet_1src_curriculum", "fabnet_1src")):
        for task in ("landmarks", "pose"):
            if with_c in probes[task] and without in probes[task]:
                c = compare(task, probes[task][with_c], probes[task][without])
                claims.append({"claim": f"the curriculum better at equal steps ({METHOD_LABELS[without]}, {task})",
                               "holds": c["apart"] and c["gap"] > 0,
                               "numbers": f"{_fmt(task, probes[task][with_c])} with vs "
                                          f"{_fmt(task, probes[task][without])} without: {c['verdict']}"})  # fmt: skip
    for task in ("landmarks", "pose"):
        if FABNET in probes[task] and "fabnet_1src_curriculum" in probes[task]:
            c = compare(task, probes[task][FABNET], probes[task]["fabnet_1src_curriculum"])
            claims.append(
                {
                    "claim": f"3 sources not worse than 1 ({task}, both with the curriculum)",
                    "holds": c["verdict"] != "behind",
                    "numbers": f"{_fmt(task, probes[task][FABNET])} vs "
                    f"{_fmt(task, probes[task]['fabnet_1src_curriculum'])}: {c['verdict']}",
                }
            )
    if FABNET in confidence:
        share = confidence[FABNET]["nearest_pose_share"]
        claims.append(
            {
                "claim": "the pose-nearest source the most confident on > 50 % of pixels",
                "holds": bool(share["mean"] > 0.5),
                "numbers": f"{100 * share['mean']:.1f} % (seeds: "
                + ", ".join(f"{100 * v:.1f}" for v in share["per_seed"])
                + "; chance 33.3 %)",
            }
        )
    if FABNET in warp:
        g = warp[FABNET]["gain_pct"]
        claims.append(
            {
                "claim": "the learned warp at least 30 % below the no-warp L1",
                "holds": bool(g["mean"] >= 30),
                "numbers": f"{g['mean']:.1f} % (seeds: " + ", ".join(f"{v:.1f}" for v in g["per_seed"]) + ")",
            }
        )
    return claims


def _per_seed_summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "per_seed": [float(v) for v in values]}  # fmt: skip


def summarise(cfg, outcomes: dict, per_seed: dict, records, probe_records) -> dict:
    """The report dict from ``{seed: {task: {method: ProbeOutcome}}}`` and the seeds' training."""
    seeds = list(outcomes)
    probes = {}
    for task in TASKS:
        methods = [m for m in outcomes[seeds[0]][task]]
        probes[task] = {m: seed_mean([outcomes[s][task][m] for s in seeds], task, cfg.bootstrap) for m in methods}
    warp = {}
    for name in per_seed[seeds[0]]["warp"]:
        best = [per_seed[s]["warp"][name]["best_val_l1"] for s in seeds]
        zero = [per_seed[s]["warp"][name]["zero_flow_val_l1"] for s in seeds]
        if any(z is None for z in zero):
            continue
        warp[name] = {"best_val_l1": _per_seed_summary(best), "zero_flow_val_l1": _per_seed_summary(zero),
                      "gain_pct": _per_seed_summary([100 * (1 - b / z) for b, z in zip(best, zero)])}  # fmt: skip
    confidence = {}
    for name in per_seed[seeds[0]]["confidence"]:
        stats = [per_seed[s]["confidence"][name] for s in seeds]
        if all(stats):
            confidence[name] = {key: _per_seed_summary([st[key] for st in stats])
                                for key in ("nearest_pose_share", "max_confidence_mean")}  # fmt: skip
            confidence[name]["samples"] = stats[0]["samples"]
    shares = {t: {m: gap_share(t, probes, m) for m in probes[t]} for t in TASKS}
    probe_test = sorted({r.identity for r in probe_records if r.split == "test"})
    sizes = {"identities": cfg.identities, "tracks_per_identity": cfg.tracks_per_identity,
             "frames_per_track": cfg.frames_per_track, "frames": len(records),
             "train_identities": len({r.identity for r in records if r.split == "train"}),
             "probe_identities": cfg.probe_identities, "test_identities": len(probe_test),
             "network_input": cfg.size, "embedding_dim": 256, "steps": cfg.steps, "batch": cfg.batch}  # fmt: skip
    return {
        "seeds": {
            "training": seeds,
            "probes": seeds,
            "data": cfg.seed,
            "probe_set": cfg.seed + PROBE_SEED_OFFSET,
        },  # fmt: skip
        "sizes": sizes,
        "probes": probes,
        "gap_share": shares,
        "warp": warp,
        "confidence": confidence,
        "claims": _claims(probes, warp, confidence),
        "per_seed": {
            str(s): {
                "times": per_seed[s]["times"],
                "warp": per_seed[s]["warp"],
                "confidence": per_seed[s]["confidence"],
            }
            for s in seeds
        },  # fmt: skip
        "val_curves": {str(s): per_seed[s]["val_curves"] for s in seeds},
    }


def study_figure(probes: dict, path: str) -> str:
    """One panel per task: each method's seed mean (bar), its 95 % interval (error bar) and the
    single seeds (dots)."""
    from fabnet.demo.figures import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.4 * len(TASKS), 4.2), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], TASKS):
        main = MAIN_METRIC[task]
        methods = list(probes[task])
        means = [probes[task][m][main] for m in methods]
        lo = [means[i] - probes[task][m]["ci95"][main][0] for i, m in enumerate(methods)]
        hi = [probes[task][m]["ci95"][main][1] - means[i] for i, m in enumerate(methods)]
        colours = ["tab:green" if m.startswith("fabnet") else "tab:grey" if m in ("noise", "supervised")
                   else "tab:orange" for m in methods]  # fmt: skip
        ax.bar(range(len(methods)), means, color=colours, yerr=[lo, hi], capsize=2, alpha=0.8)
        for i, m in enumerate(methods):
            seeds = probes[task][m]["per_seed"][main]
            ax.plot([i] * len(seeds), seeds, "k.", ms=3)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([METHOD_LABELS.get(m, m).replace(", ", "\n").replace(" + ", "\n+ ").replace(" (", "\n(")
                            for m in methods], fontsize=5.5, rotation=90)  # fmt: skip
        arrow = "lower is better" if LOWER_IS_BETTER[main] else "higher is better"
        ax.set_title(f"{task}: {main} ({arrow})", fontsize=9)
        if "auc" in main:
            ax.axhline(0.5, color="k", lw=0.8, ls=":")
            ax.set_ylim(0.4, 1.0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Seed mean (bar), 95 % interval over test identities (error bar), single seeds (dots)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def validation_figure(curves: dict, warp: dict, path: str) -> str:
    """Validation L1 against step of every FAb-Net variant, first seed; the no-warp L1 dashed."""
    from fabnet.demo.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, points in curves.items():
        if points:
            steps, loss = zip(*points)
            ax.plot(steps, loss, "-" if name != "fabnet_first_half" else "k-", lw=1.2,
                    label=METHOD_LABELS.get(name, "shared first half (1 source)"))  # fmt: skip
    zero = [w["zero_flow_val_l1"]["mean"] for n, w in warp.items() if n.startswith("fabnet_1src")]
    if zero:
        ax.axhline(zero[0], color="tab:red", ls="--", lw=1, label="unwarped source (1 source)")
    ax.set_xlabel("step")
    ax.set_ylabel("validation L1")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_study_report(report: dict, out: str) -> str:
    """``DIR/report.md``, ``DIR/report.json`` and the figures from the report dict."""
    from fabnet.probe.pipeline import dump_json

    cfg, sizes, probes = report["config"], report["sizes"], report["probes"]
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    figures = {"probe_metrics": study_figure(probes, os.path.join(fig_dir, "study_probe_metrics.png"))}
    first = next(iter(report["val_curves"]))
    figures["validation"] = validation_figure(report["val_curves"][first], report["warp"],
                                              os.path.join(fig_dir, "study_validation.png"))  # fmt: skip
    for name in os.listdir(fig_dir):
        if name.startswith("confidence_") and name.endswith(f"seed{first}.png"):
            figures[name[:-4]] = os.path.join(fig_dir, name)
    report["figures"] = {k: os.path.relpath(v, out) for k, v in figures.items()}
    quick = cfg.get("name") == "quick"
    seeds = report["seeds"]["training"]
    lines = ["# FAb-Net study on synthetic faces" + (": smoke test" if quick else ""), ""]
    if quick:
        lines += ["**This is a smoke test (`--quick`): every stage runs on a toy budget, so its numbers mean "
                  "nothing about the method.** Run `fabnet study` for the real comparison.", ""]  # fmt: skip
    lines += [
        f"Run `{report['command']}` on {report.get('machine', 'this machine')}, {report['date']}; "
        f"{report['times']['total'] / 60:.0f} min in all. Training seeds {seeds}; load average (1 min) at the "
        f"start {report['load_average']['start'][0]:.1f}, at the end {report['load_average']['end'][0]:.1f}.",
        "",
        "## Setup",
        "",
        f"- Training data: {sizes['identities']} synthetic identities x {cfg['tracks_per_identity']} tracks x "
        f"{cfg['frames_per_track']} frames at {cfg['image_size']} px ({sizes['frames']} frames; "
        f"{sizes['train_identities']} training identities), networks at S = {cfg['size']}.",
        f"- Probe set: {cfg['probe_identities']} other identities x {cfg['probe_frames']} frames, split 60/10/30 "
        f"by identity; **{sizes['test_identities']} test identities**.",
        f"- Every method: {cfg['steps']} {cfg['optimizer']} steps of {cfg['batch']} (lr {cfg['lr']}, weight decay "
        f"{cfg['weight_decay']}). FAb-Net: a shared first half (1 source, no curriculum, {cfg['steps'] // 2} "
        f"steps from the identity warp), then {cfg['steps'] - cfg['steps'] // 2} steps in each of four ways: 1 "
        "source, 1 source + curriculum, 3 sources (from the 1-source weights, the paper's schedule), 3 sources + "
        f"curriculum (window shifted after {cfg['patience']} validation rounds without improvement; validation "
        f"every {cfg['val_every']} steps on {cfg['val_batches'] * cfg['batch']} fixed pairs).",
        "- Baselines on the same frames and steps: autoencoder (L1 reconstruction), contrastive (SimCLR: two crops "
        "of 0.55-0.85 of the side with colour distortion, projection 256-128, InfoNCE at temperature 0.2, the other "
        f"{2 * cfg['batch'] - 2} views of the batch as negatives), random-init encoder (BatchNorm statistics only), "
        "raw pixels, random features (the floor) and the supervised ceiling (the same encoder trained on the "
        "training identities' landmarks, pose, expression and attributes).",
        "- Linear probes (BatchNorm1d + Linear, Adam, early stopping on the probe set's validation identities) on "
        "each frozen embedding, one per seed. **Numbers: mean over the seeds, [95 % interval of that mean from "
        f"{cfg['bootstrap']} bootstrap resamples of the test identities], (sd over seeds).**",
        "",
        "## Linear probes",
        "",
        "| method | " + " | ".join(f"{t} ({MAIN_METRIC[t]})" for t in TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for m in probes[TASKS[0]]:
        cells = []
        for t in TASKS:
            r = probes[t].get(m)
            cells.append(f"{_fmt(t, r)} ({r['seed_sd'][MAIN_METRIC[t]]:.3g})" if r else "")
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "Landmarks: mean error in % of the outer inter-ocular distance; pose: mean absolute error of "
              "yaw / pitch / roll in degrees (lower is better for both); expression (4 classes) and attributes "
              "(4 binary): mean ROC AUC (0.5 = chance).", "",
              "Share of the gap from random features (0) to the supervised ceiling (1):", "",
              "| method | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]  # fmt: skip
    for m in probes[TASKS[0]]:
        if m in ("noise", "supervised"):
            continue
        shares = [report["gap_share"][t].get(m) for t in TASKS]
        lines.append(
            f"| {METHOD_LABELS.get(m, m)} | " + " | ".join("" if s is None else f"{s:.2f}" for s in shares) + " |"
        )
    lines += ["", "## The paper's claims", "",
              "A claim of superiority holds where the 95 % intervals do not overlap and the gap exceeds twice the "
              "larger of the two seed sds; \"better\" for the curriculum needs the intervals apart; \"not worse\" "
              "holds unless the 3-source model's interval lies wholly on the worse side. FAb-Net is the paper's "
              "model, 3 sources + curriculum.", "",
              "| claim | holds | numbers |", "|---|---|---|"]  # fmt: skip
    for c in report["claims"]:
        lines.append(f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['numbers']} |")
    held = sum(bool(c["holds"]) for c in report["claims"])
    lines += ["", f"{held} of the {len(report['claims'])} claims hold on this data at this budget."]
    contrast = [(t, compare(t, probes[t][FABNET], probes[t]["contrastive"])) for t in TASKS
                if FABNET in probes[t] and "contrastive" in probes[t]]  # fmt: skip
    if contrast:
        lines += ["", "Against the contrastive encoder, FAb-Net (3 sources + curriculum) is "
                  + "; ".join(f"{c['verdict']} it on {t} ({_fmt(t, probes[t][FABNET])} vs "
                              f"{_fmt(t, probes[t]['contrastive'])})" for t, c in contrast) + "."]  # fmt: skip
    lines += ["", "## The warp and the confidences", "", "| variant | best val L1 | no-warp L1 | warp gain % |",
              "|---|---|---|---|"]  # fmt: skip
    for name, w in report["warp"].items():
        g = w["gain_pct"]
        lines.append(
            f"| {METHOD_LABELS.get(name, name)} | {w['best_val_l1']['mean']:.4f} | "
            f"{w['zero_flow_val_l1']['mean']:.4f} | {g['mean']:.1f} (sd {g['seed_sd'] or 0:.1f}) |"
        )
    for name, c in report["confidence"].items():
        s, mx = c["nearest_pose_share"], c["max_confidence_mean"]
        lines.append(f"\n{METHOD_LABELS.get(name, name)}: over {c['samples']} test targets, the pose-nearest of 3 "
                     f"sources is the most confident on {100 * s['mean']:.1f} % of pixels (chance 33.3 %); the "
                     f"largest confidence averages {mx['mean']:.3f} (1/3 = no selection).")  # fmt: skip
    lines += ["", "## Figures", ""]
    for name, rel in report["figures"].items():
        lines.append(f"- {name}: [`{rel}`]({rel})")
    lines += ["", "## Wall times (s)", "", "| seed | " + " | ".join(next(iter(report["per_seed"].values()))["times"])
              + " |", "|---|" + "---|" * len(next(iter(report["per_seed"].values()))["times"])]  # fmt: skip
    for s, r in report["per_seed"].items():
        lines.append(f"| {s} | " + " | ".join(f"{v:.0f}" for v in r["times"].values()) + " |")
    lines.append("")
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines))
    dump_json(report, os.path.join(out, "report.json"))
    return os.path.join(out, "report.md")


__all__ = ["compare", "gap_share", "seed_mean", "summarise", "write_study_report"]
