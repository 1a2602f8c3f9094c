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

import math
import os

from fabnet.data.budget import oracle_markdown
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
    names = set(probes[TASKS[0]])
    lines = [
        "## Setup",
        "",
        f"- Training data: {sizes['identities']} synthetic identities x {cfg['tracks_per_identity']} tracks x "
        f"{cfg['frames_per_track']} frames at {cfg['image_size']} px ({sizes['frames']} frames; "
        f"{sizes['train_identities']} training identities; light: {cfg.get('light', 'head')}), networks at "
        f"S = {cfg['size']}.",
        f"- Probe set: {cfg['probe_identities']} other identities x {cfg['probe_frames']} frames, split 60/10/30 "
        f"by identity; **{sizes['test_identities']} test identities**.",
        f"- Every method of the main comparison: {cfg['steps']} {cfg['optimizer']} steps of {cfg['batch']} (lr "
        f"{cfg['lr']}, weight decay {cfg['weight_decay']}). FAb-Net: 1 source from the near-identity warp, "
        f"validation every {cfg['val_every']} steps on {cfg['val_batches'] * cfg['batch']} fixed pairs.",
    ]
    if cfg.get("ablation_steps"):
        lines.append(
            f"- The ablation: the main 1-source model continued for {cfg['ablation_steps']} steps of "
            f"{cfg['ablation_batch']} in four ways (1 source, 1 source + curriculum, 3 sources, 3 sources + "
            f"curriculum; the window shifts after {cfg['ablation_patience']} validation rounds without improvement)."
        )
    lines += [
        "- Rivals (the paper's claims): "
        + "; ".join(m.describe(cfg["size"]) for m in study_methods(ablation=True) if m.rival and m.name in names)
        + ". Diagnostics (reported, not claimed against): "
        + "; ".join(
            m.describe(cfg["size"])
            for m in study_methods(ablation=True)
            if m.kind != FABNET and not m.rival and m.name in names
        )
        + ".",
        "- Linear probes (BatchNorm1d + Linear, Adam, early stopping on the probe set's validation identities) on "
        "each frozen embedding, one per seed, **absolute** (the labels as they are) and **within identity** "
        "(embeddings and pose / landmark labels centred on each identity's mean over its frames; the test "
        "predictions get the identity's mean label back, so the units stay the same: it asks how a face changes "
        "between its own frames, which is what FAb-Net's decoders read). **Numbers: mean over the seeds, [95 % "
        f"interval of that mean from {cfg['bootstrap']} bootstrap resamples of the test identities], (sd over "
        "seeds).**",
        "",
    ]
    return lines


def _probe_table(table: dict, tasks) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"{t} ({MAIN_METRIC[t]})" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for m in table[tasks[0]]:
        cells = []
        for t in tasks:
            r = table[t].get(m)
            sd = r["seed_sd"][MAIN_METRIC[t]] if r else None
            cells.append(f"{fmt(t, r)}" + ("" if sd is None or math.isnan(sd) else f" ({sd:.3g})") if r else "")
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines


def _study_probes(report: dict) -> list[str]:
    """Within-identity and absolute probe tables, and the shares of the gap."""
    probes, within = report["probes"], report.get("probes_within_identity", {})
    lines = []
    if within:
        lines += ["## Linear probes within identity", ""] + _probe_table(within, list(within)) + [""]
    lines += ["## Linear probes, absolute", ""] + _probe_table(probes, list(TASKS))
    lines += [
        "",
        "Landmarks: mean error in % of the outer inter-ocular distance; pose: mean absolute error of "
        "yaw / pitch / roll in degrees (lower is better for both); expression (4 classes) and attributes "
        "(4 binary): mean ROC AUC (0.5 = chance).",
        "",
        "Share of the gap from random features (0) to the supervised ceiling (1), absolute probes:",
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
    """Each of the paper's claims with its verdict and numbers; the diagnostics."""
    probes = report["probes"]
    lines: list[str] = []
    lines += [
        "",
        "## The paper's claims",
        "",
        'A claim of superiority ("ahead of") holds where the 95 % intervals do not overlap and the gap exceeds '
        'twice the larger of the two seed sds; "ahead of or level with" and "not worse" hold unless FAb-Net\'s '
        'interval lies wholly on the worse side; "better" for the curriculum needs the intervals apart.',
        "",
        "| claim | holds | numbers |",
        "|---|---|---|",
    ]
    for c in report["claims"]:
        lines.append(f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['numbers']} |")
    held = sum(bool(c["holds"]) for c in report["claims"])
    lines += ["", f"{held} of the {len(report['claims'])} claims hold on this data at this budget."]
    diagnostics = against_others(probes, report.get("probes_within_identity", {}))
    if diagnostics:
        lines += ["", "### Diagnostics"] + diagnostics
    return lines


def _study_oracle(report: dict) -> list[str]:
    """The oracle budget: how much of the change a warp could explain, and the learned share."""
    o = report.get("oracle") or {}
    if not o:
        return []
    lines = [
        "",
        "## The warp against the oracle",
        "",
        f"{o['pairs']} pairs of frames of one track from the training data's test identities, at {o['size']} px "
        "(`fabnet.data.budget`): the exact-geometry warp projects each target pixel's true 3-D point into the "
        "source and samples it as the op does; what no warp explains (expression, what turns into view) stays.",
        "",
        oracle_markdown(o),
    ]
    if o.get("share_each"):
        each = ", ".join(f"{100 * v:.0f} %" for v in o["share_each"])
        lines += ["", f"Share of the oracle's gain per seed: {each}."]
    return lines


def _study_warp(report: dict) -> list[str]:
    """The warp's gain over not warping per variant on the validation pairs; the confidences."""
    lines: list[str] = []
    lines += [
        "",
        "## Validation L1 of the variants",
        "",
        "| variant | best val L1 | no-warp L1 | below no-warp % |",
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


def _beside(report: dict) -> list[str]:
    """The tables of another study run beside this one (``--beside``), e.g. the camera light."""
    other = report.get("beside")
    if not other:
        return []
    cfg = other["config"]
    seeds = other["seeds"]["training"]
    lines = [
        "",
        f"## Beside it: {cfg.get('light', 'head')} light",
        "",
        f"The same sizes with the light fixed to the **{cfg.get('light')}** (`{other['command']}`, "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {seeds}; intervals over test identities only"
        + ("" if len(seeds) > 1 else ", no seed sd")
        + ").",
        "",
    ]
    within = other.get("probes_within_identity", {})
    if within:
        lines += ["Within identity:", ""] + _probe_table(within, list(within)) + [""]
    lines += ["Absolute:", ""] + _probe_table(
        other["probes"], [t for t in ("landmarks", "pose") if t in other["probes"]]
    )
    if other.get("oracle"):
        lines += ["", oracle_markdown(other["oracle"])]
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
    figures = {}
    within = report.get("probes_within_identity")
    if within:
        figures["probe_metrics_within_identity"] = study_figure(
            within, os.path.join(fig_dir, "study_probe_metrics_within_identity.png"), "within identity"
        )
    figures["probe_metrics"] = study_figure(probes, os.path.join(fig_dir, "study_probe_metrics.png"), "absolute")
    first = next(iter(report["val_curves"]))
    figures["validation"] = validation_figure(
        report["val_curves"][first], report["warp"], os.path.join(fig_dir, "study_validation.png")
    )
    for name in os.listdir(fig_dir):
        if name.startswith("confidence_") and name.endswith(f"seed{first}.png"):
            figures[name[:-4]] = os.path.join(fig_dir, name)
    report["figures"] = {k: os.path.relpath(v, out) for k, v in figures.items()}
    lines = _study_header(report) + _study_setup(report) + _study_probes(report) + _study_claims(report)
    lines += _study_oracle(report) + _beside(report) + _study_warp(report) + _study_figures_and_times(report)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines))
    dump_json(report, os.path.join(out, "report.json"))
    return os.path.join(out, "report.md")


__all__ = ["compare", "gap_share", "seed_mean", "summarise", "write_study_report"]
