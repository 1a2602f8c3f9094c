"""The study's report: Markdown, JSON and figures from the report dict (fabnet.demo.study_stats).

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

from fabnet.demo.methods import CEILING, FABNET, FLOOR, METHODS, label, study_methods
from fabnet.demo.study_claims import against_others, compare, fmt
from fabnet.demo.study_figures import study_figure, validation_figure
from fabnet.demo.study_stats import gap_share, seed_mean, summarise
from fabnet.probe.tasks import MAIN_METRIC, TASKS


def _study_header(report: dict) -> list[str]:
    """Title, the smoke-test warning, the command, machine, seeds and load."""
    cfg = report["config"]
    quick = cfg.get("name") == "quick"
    seeds = report["seeds"]["training"]
    lines = ["# FAb-Net study on synthetic faces" + (": smoke test" if quick else ""), ""]
    if quick:
        lines += [
            "**This is a smoke test (`--quick`): every stage runs on a toy budget, so its numbers mean "
            "nothing about the method.** Run `fabnet study` for the real comparison.",
            "",
        ]
    lines += [
        f"Run `{report['command']}` on {report.get('machine', 'this machine')}, {report['date']}; "
        f"{report['times']['total'] / 60:.0f} min in all. Training seeds {seeds}; load average (1 min) at the "
        f"start {report['load_average']['start'][0]:.1f}, at the end {report['load_average']['end'][0]:.1f}.",
        "",
    ]
    return lines


def _study_setup(report: dict) -> list[str]:
    """The data, the probe set, the budget, the methods and the probes, as configured."""
    cfg, sizes, probes = report["config"], report["sizes"], report["probes"]
    return [
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
        "- Baselines on the same frames and steps: "
        + "; ".join(m.describe(cfg["size"]) for m in study_methods() if m.kind != FABNET and m.name in probes[TASKS[0]])
        + ".",
        "- Linear probes (BatchNorm1d + Linear, Adam, early stopping on the probe set's validation identities) on "
        "each frozen embedding, one per seed. **Numbers: mean over the seeds, [95 % interval of that mean from "
        f"{cfg['bootstrap']} bootstrap resamples of the test identities], (sd over seeds).**",
        "",
    ]


def _study_probes(report: dict) -> list[str]:
    """Seed means with intervals and sds per method and task, and the shares of the gap."""
    probes = report["probes"]
    lines = [
        "## Linear probes",
        "",
        "| method | " + " | ".join(f"{t} ({MAIN_METRIC[t]})" for t in TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for m in probes[TASKS[0]]:
        cells = []
        for t in TASKS:
            r = probes[t].get(m)
            cells.append(f"{fmt(t, r)} ({r['seed_sd'][MAIN_METRIC[t]]:.3g})" if r else "")
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Landmarks: mean error in % of the outer inter-ocular distance; pose: mean absolute error of "
        "yaw / pitch / roll in degrees (lower is better for both); expression (4 classes) and attributes "
        "(4 binary): mean ROC AUC (0.5 = chance).",
        "",
        "Share of the gap from random features (0) to the supervised ceiling (1):",
        "",
        "| method | " + " | ".join(TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for m in probes[TASKS[0]]:
        if m in METHODS and METHODS[m].kind in (FLOOR, CEILING):
            continue
        shares = [report["gap_share"][t].get(m) for t in TASKS]
        lines.append(f"| {label(m)} | " + " | ".join("" if s is None else f"{s:.2f}" for s in shares) + " |")
    return lines


def _study_claims(report: dict) -> list[str]:
    """Each of the paper's claims with its verdict and numbers; the other trained baselines."""
    probes = report["probes"]
    lines: list[str] = []
    lines += [
        "",
        "## The paper's claims",
        "",
        "A claim of superiority holds where the 95 % intervals do not overlap and the gap exceeds twice the "
        'larger of the two seed sds; "better" for the curriculum needs the intervals apart; "not worse" '
        "holds unless the 3-source model's interval lies wholly on the worse side. FAb-Net is the paper's "
        "model, 3 sources + curriculum.",
        "",
        "| claim | holds | numbers |",
        "|---|---|---|",
    ]
    for c in report["claims"]:
        lines.append(f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['numbers']} |")
    held = sum(bool(c["holds"]) for c in report["claims"])
    lines += ["", f"{held} of the {len(report['claims'])} claims hold on this data at this budget."]
    lines += against_others(probes)
    return lines


def _study_warp(report: dict) -> list[str]:
    """The warp's gain over not warping per variant; the confidences' selectivity."""
    lines: list[str] = []
    lines += [
        "",
        "## The warp and the confidences",
        "",
        "| variant | best val L1 | no-warp L1 | warp gain % |",
        "|---|---|---|---|",
    ]
    for name, w in report["warp"].items():
        g = w["gain_pct"]
        lines.append(
            f"| {label(name)} | {w['best_val_l1']['mean']:.4f} | "
            f"{w['zero_flow_val_l1']['mean']:.4f} | {g['mean']:.1f} (sd {g['seed_sd'] or 0:.1f}) |"
        )
    for name, c in report["confidence"].items():
        s, mx = c["nearest_pose_share"], c["max_confidence_mean"]
        lines.append(
            f"\n{label(name)}: over {c['samples']} test targets, the pose-nearest of {METHODS[name].sources} "
            f"sources is the most confident on {100 * s['mean']:.1f} % of pixels (chance 33.3 %); the "
            f"largest confidence averages {mx['mean']:.3f} (1/3 = no selection)."
        )
    return lines


def _study_figures_and_times(report: dict) -> list[str]:
    """Links to the figures and the wall times per seed."""
    lines: list[str] = []
    lines += ["", "## Figures", ""]
    for name, rel in report["figures"].items():
        lines.append(f"- {name}: [`{rel}`]({rel})")
    lines += [
        "",
        "## Wall times (s)",
        "",
        "| seed | " + " | ".join(next(iter(report["per_seed"].values()))["times"]) + " |",
        "|---|" + "---|" * len(next(iter(report["per_seed"].values()))["times"]),
    ]
    for s, r in report["per_seed"].items():
        lines.append(f"| {s} | " + " | ".join(f"{v:.0f}" for v in r["times"].values()) + " |")
    lines.append("")
    return lines


def write_study_report(report: dict, out: str) -> str:
    """``DIR/report.md``, ``DIR/report.json`` and the figures from the report dict."""
    from fabnet.probe.pipeline import dump_json

    probes = report["probes"]
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    figures = {"probe_metrics": study_figure(probes, os.path.join(fig_dir, "study_probe_metrics.png"))}
    first = next(iter(report["val_curves"]))
    figures["validation"] = validation_figure(
        report["val_curves"][first], report["warp"], os.path.join(fig_dir, "study_validation.png")
    )
    for name in os.listdir(fig_dir):
        if name.startswith("confidence_") and name.endswith(f"seed{first}.png"):
            figures[name[:-4]] = os.path.join(fig_dir, name)
    report["figures"] = {k: os.path.relpath(v, out) for k, v in figures.items()}
    lines = _study_header(report) + _study_setup(report) + _study_probes(report) + _study_claims(report)
    lines += _study_warp(report) + _study_figures_and_times(report)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines))
    dump_json(report, os.path.join(out, "report.json"))
    return os.path.join(out, "report.md")


__all__ = ["compare", "gap_share", "seed_mean", "summarise", "write_study_report"]
