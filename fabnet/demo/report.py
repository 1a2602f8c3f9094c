"""The demo's report: Markdown from the report dict, sentences that follow the numbers."""

from __future__ import annotations

import os

from fabnet.demo.methods import FABNET, TRAINED, headline
from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS


def better(task: str, a: float, b: float) -> bool:
    return a < b if LOWER_IS_BETTER[MAIN_METRIC[task]] else a > b


def versus(task: str, a: dict, b: dict) -> str:
    """ "ahead of" / "behind" when the two 95 % intervals do not overlap, else "level with (the
    intervals overlap)"; without intervals, the bare order of the two numbers."""
    metric = MAIN_METRIC[task]
    ca, cb = a.get("ci95", {}).get(metric), b.get("ci95", {}).get(metric)
    if ca is None or cb is None:
        return "ahead of" if better(task, a[metric], b[metric]) else "not ahead of"
    if ca[1] < cb[0] or cb[1] < ca[0]:
        return "ahead of" if better(task, a[metric], b[metric]) else "behind"
    return "level with (the intervals overlap)"


def with_ci(task: str, metrics: dict) -> str:
    metric = MAIN_METRIC[task]
    ci = metrics.get("ci95", {}).get(metric)
    return f"{metrics[metric]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _comparison_text(probes: dict, methods) -> list[str]:
    """Which method is ahead on each task, from the numbers and their intervals only: a method
    is "ahead" of another only where their 95 % intervals over test identities do not overlap."""
    lines = []
    fabnet = [m for m in methods if m.kind == FABNET]
    head, first = headline(methods), fabnet[0]
    others = [m.name for m in methods if m.kind != FABNET]
    for task in TASKS:
        results = probes.get(task, {})
        if head.name not in results or first.name not in results or head is first:
            continue
        top, one = results[head.name], results[first.name]
        line = (
            f"- **{task}** ({MAIN_METRIC[task]}): {_short(head)} {with_ci(task, top)} is "
            f"{versus(task, top, one)} {_short(first)} {with_ci(task, one)}"
        )
        present = [m for m in others if m in results]
        if present:
            line += f"; against the baselines, {_short(head)} is " + ", ".join(
                f"{versus(task, top, results[m])} {m} {with_ci(task, results[m])}" for m in present
            )
        lines.append(line + ".")
    for task in TASKS:
        if probes.get(task):
            metric = MAIN_METRIC[task]
            ranked = sorted(probes[task], key=lambda m: probes[task][m][metric], reverse=not LOWER_IS_BETTER[metric])
            lines.append(
                f"- {task}, best to worst: " + ", ".join(f"{m} ({probes[task][m][metric]:.3f})" for m in ranked) + "."
            )
    return lines


def _baselines_text(report: dict, methods) -> str:
    """Every method but FAb-Net, as the setup describes it, with its training budget."""
    cfg = report["config"]
    parts = []
    for m in methods:
        if m.kind == FABNET:
            continue
        steps = report["steps"].get(m.name, 0)
        budget = f", {steps} steps of {cfg['ae_batch']}, same optimiser settings" if m.kind == TRAINED else ""
        parts.append(m.describe(cfg["size"]) + budget)
    return "; ".join(parts)


def _short(method) -> str:
    """ "3 sources + curriculum" for "FAb-Net, 3 sources + curriculum"."""
    return method.label.split(", ", 1)[-1]


def _header(report: dict) -> list[str]:
    """Title, the smoke-test warning, the command, machine and load."""
    cfg = report["config"]
    lines = [
        "# FAb-Net demo on synthetic faces" + (": smoke test" if cfg.get("name") == "quick" else ""),
        "",
    ]
    if cfg.get("name") == "quick":
        lines += [
            "**This is a smoke test (`--quick`): every stage runs on a toy budget (tens of training steps, "
            f"{cfg['probe_identities']} probe identities), so its numbers mean nothing about the method.** "
            "Run `fabnet demo` for the real comparison.",
            "",
        ]
    lines += [
        f"Run `{report['command']}` on {report['machine']}, {report['date']}; total wall time "
        f"{report['times']['total']:.0f} s. Seed {cfg['seed']}. Load average (1 min) at the start "
        f"{report['load_average']['start'][0]:.1f}, at the end {report['load_average']['end'][0]:.1f}"
        + (", synthetic data reused from an earlier run" if report["data"].get("reused") else "")
        + ".",
        "",
    ]
    return lines


def _setup(report: dict, methods) -> list[str]:
    """The data, the networks, the methods and the probes, as configured."""
    cfg = report["config"]
    lines: list[str] = []
    lines += [
        "## Setup",
        "",
        f"- Training data: {cfg['identities']} synthetic identities x {cfg['tracks_per_identity']} tracks x "
        f"{cfg['frames_per_track']} frames at {cfg['image_size']} px, identity-disjoint 75/15/10 split "
        f"({report['data']['frames']} frames: train {report['data']['train']}, val {report['data']['val']}, "
        f"test {report['data']['test']}).",
        f"- Probe set: {cfg['probe_identities']} other identities (never seen in training) x 1 track x "
        f"{cfg['probe_frames']} frames, split by identity 60/10/30 into probe fitting, probe early stopping "
        f"and test ({report['sizes']['test_identities']} test identities). Every probe metric comes with a 95 % "
        "interval from 1000 bootstrap resamples of the test identities.",
        f"- Networks at S = {cfg['size']}, 256-d embedding, decoders' last conv at 0.01 of its random initialisation "
        f"(the warp starts near the identity, confidences near equal). FAb-Net stage 1: 1 source, {cfg['steps_1src']} "
        f"{cfg['optimizer']} steps of {cfg['batch_1src']} (lr {cfg['lr']}, weight decay "
        f"{cfg.get('weight_decay', 0)}, LR divided by 10 after {cfg['patience_1src']} validation rounds without "
        f"improvement; validation every {cfg['val_every']} steps on {cfg['val_batches'] * cfg['batch_1src']} "
        "fixed pairs), no curriculum. Stage 2: 3 sources, curriculum, initialised from stage 1, flow decoder "
        f"trained too (the original release froze it), {cfg['steps_3src']} more steps of {cfg['batch_3src']} "
        "(curriculum window shifted by 10 points, then the LR divided by 10, after "
        f"{cfg['patience']} validation rounds without improvement).",
        "- Baselines: " + _baselines_text(report, methods) + ".",
        "- Probes: BatchNorm1d(D) + Linear(D, k, bias=False) on the frozen embedding of the centre crop (D = 256; "
        f"{3 * cfg['size'] ** 2} for raw pixels), "
        f"Adam lr 1e-3, batch {cfg['probe_batch']}, early stopping on the probe set's validation identities "
        f"(patience {cfg['probe_patience']} epochs, at most {cfg['probe_max_epochs']}); metrics on its test "
        "identities.",
        "",
    ]
    return lines


def _opening_tables(report: dict) -> list[str]:
    """The probes within identity and absolute, and the warp against the oracle: what the demo
    found, before how it was set up."""
    from fabnet.data.budget import oracle_markdown
    from fabnet.probe.pipeline import format_table

    lines: list[str] = []
    within = report.get("probes_within_identity")
    if within:
        lines += [
            "## Linear probes within identity",
            "",
            "Embeddings and pose / landmark labels centred on each identity's mean over its frames (the "
            "predictions get the identity's mean label back, so the units are the absolute table's): how a face "
            "changes between its own frames, which is what FAb-Net's decoders read.",
            "",
            format_table(within, tasks=tuple(within)),
            "",
        ]
    lines += ["## Linear probes, absolute", "", format_table(report["probes"]), ""]
    if report.get("oracle"):
        lines += [
            "## The warp against the oracle",
            "",
            "Test pairs of the training data; the oracle warps the source by the true 3-D geometry, sampled as "
            "the op samples (`fabnet.data.budget`).",
            "",
            oracle_markdown(report["oracle"]),
            "",
        ]
    return lines


def _probe_tables(report: dict) -> list[str]:
    """Notes on the probe tables, and pose per angle."""
    probes = report["probes"]
    lines: list[str] = []
    lines += [
        "## Probe notes",
        "",
        "Landmarks: mean error over the 23 landmarks in % of the outer inter-ocular distance (lower is better). "
        "Pose: mean absolute error of yaw / pitch / roll in degrees (lower is better). Expression (4 classes, "
        "one-vs-rest) and attributes (4 binary): mean ROC AUC (higher is better, 0.5 = chance).",
        "",
        "Per-angle pose errors (deg):",
        "",
        "| method | yaw | pitch | roll |",
        "|---|---|---|---|",
    ]
    for m, v in probes.get("pose", {}).items():
        lines.append(
            f"| {m} | {v.get('mae_yaw', float('nan')):.2f} | {v.get('mae_pitch', float('nan')):.2f} | "
            f"{v.get('mae_roll', float('nan')):.2f} |"
        )
    return lines


def _fabnet_sections(report: dict, methods) -> list[str]:
    """The FAb-Net variants against each other and the baselines; how much of the warp was learned."""
    cfg, probes = report["config"], report["probes"]
    lines: list[str] = []
    fabnet = [m for m in methods if m.kind == FABNET]
    lines += ["", f"## {_short(fabnet[0])} vs {_short(headline(methods))}", ""]
    lines += _comparison_text(probes, methods)
    lines += [
        "",
        f"The {headline(methods).sources}-source model is the {fabnet[0].sources}-source model trained for "
        f"{cfg['steps_3src']} more steps, so it also had more training; at this scale (minutes of CPU, "
        "a few thousand steps, a single seed) differences of a few tenths are within run-to-run noise and "
        "say nothing either way about the paper's Table 1.",
        "",
    ]
    zero, best = report.get("zero_flow_val_l1", {}), report.get("best_val_l1", {})
    if zero:
        lines += ["## How much of the warp was learned", ""]
        for m in fabnet:
            what = "the unwarped source" if m.sources == 1 else "the equal-weight blend of the unwarped sources"
            if m.name in zero and m.name in best:
                gain = 100 * (1 - best[m.name] / zero[m.name])
                lines.append(
                    f"- {m.name}: best validation L1 {best[m.name]:.4f}; {what} gives {zero[m.name]:.4f} "
                    f"({gain:.0f}% lower with the learned warp)."
                )
        lines += [
            "",
            "The gap is the part of the frame-to-frame change that the learned flows explain: the "
            "flow decoder reads nothing but the two embeddings, so pose reaches the embedding only as far "
            "as the warp has been learned. The `*_samples_final` figures show the warps themselves.",
            "",
        ]
    return lines


def _retrieval(report: dict) -> list[str]:
    """Pose differences of cross-identity neighbours, and where the variance lies."""
    cfg = report["config"]
    lines: list[str] = []
    lines += ["## Retrieval", ""]
    for m, r in report.get("retrieval", {}).items():
        if "neighbour_pose_diff_deg" in r:
            n, rd = r["neighbour_pose_diff_deg"], r["random_pose_diff_deg"]
            lines.append(
                f"- {m}: mean |yaw, pitch, roll| difference between a test query and its top-"
                f"{cfg['retrieval_k']} other-identity neighbours {n[0]:.1f} / {n[1]:.1f} / {n[2]:.1f} deg "
                f"(random other-identity frames: {rd[0]:.1f} / {rd[1]:.1f} / {rd[2]:.1f})"
                + (
                    f"; {100 * r['identity_share']:.0f}% of the embedding variance lies between identities"
                    if "identity_share" in r
                    else ""
                )
                + (
                    f"; pose explains {100 * r['within_track_pose_r2']:.0f}% of the frame-to-frame "
                    "(within-track) variance"
                    if "within_track_pose_r2" in r
                    else ""
                )
                + "."
            )
    if any("identity_share" in r for r in report.get("retrieval", {}).values()):
        lines += [
            "",
            "Where most of the variance lies between identities, the nearest other identity is the "
            "most similar-looking one (skin, hair, background, light) and its frames come first whatever "
            "their pose: neighbours are pose-matched only as far as the difference to random frames above "
            "shows. The within-track figure is the other half: with every track's mean removed (identity "
            "with it), it is the R^2 of a least-squares fit of the embedding's frame-to-frame change on the "
            "pose change, i.e. how much of what moves the embedding within one face is pose.",
        ]
    return lines


def _decoders(report: dict) -> list[str]:
    """What the decoders read from the target embedding, and the confidences."""
    lines: list[str] = []
    swap = {m: r for m, r in (report.get("target_swap") or {}).items() if r}
    if swap:
        lines += [
            "",
            "## What the decoders read from the target embedding",
            "",
            "Mean L1 of the generated test frame against the real target when the target's embedding is "
            "replaced before the decoders (the sources and their embeddings unchanged; "
            f"{next(iter(swap.values()))['samples']} targets, `fabnet.probe.swap`):",
            "",
            "| target embedding | " + " | ".join(swap) + " |",
            "|---|" + "---|" * len(swap),
        ]
        labels = {
            "own": "its own (as trained)",
            "same_track_other": "another frame of the same track",
            "track_mean": "the mean of its track",
            "other_identity_pose": "another identity, nearest pose",
            "other_identity_random": "another identity, random frame",
            "unwarped": "none: unwarped sources, equal weights",
        }
        for cond, label in labels.items():
            if all(cond in r["l1"] for r in swap.values()):
                lines.append(f"| {label} | " + " | ".join(f"{r['l1'][cond]:.4f}" for r in swap.values()) + " |")
        lines += [
            "",
            "If the embedding coded pose the same way for every face, the pose-matched frame of another "
            "identity would come close to the target's own embedding. Where it is no better than a random "
            "frame of another identity, the decoders read the pose only relative to the face's own "
            "identity, and cosine neighbours across identities cannot be pose-matched by this "
            "embedding.",
        ]
    conf = report.get("confidence") or {}
    if conf:
        lines += [
            "",
            "## Confidence of the 3-source model",
            "",
            f"Over {conf['samples']} test targets (every frame of every test track, its {conf['num_sources']} "
            f"sources spread over the rest of the track's yaw range): the largest of the "
            f"{conf['num_sources']} confidences averages "
            f"{conf['max_confidence_mean']:.3f} per pixel ({1 / conf['num_sources']:.3f} = no selection), and "
            f"the source closest in pose to the target is the most confident one on "
            f"{100 * conf['nearest_pose_share']:.1f}% of the pixels (chance {100 * conf['chance_share']:.1f}%). "
            "Figure: `figures/confidence_heatmaps.png`.",
        ]
    return lines


def _figures_and_times(report: dict, out: str) -> list[str]:
    """Links to the figures (relative to the report) and the wall times."""
    lines: list[str] = []
    lines += ["", "## Figures", ""]
    for name, path in report["figures"].items():
        # Relative to the report's directory whether ``out`` and the paths are relative or not
        # (a path like "demo/figures/x.png" for --out demo would break the link inside demo/).
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out))
        lines.append(f"- {name}: [`{rel}`]({rel})")
    lines += ["", "## Wall times (s)", "", "| stage | s |", "|---|---|"]
    for k, v in report["times"].items():
        lines.append(f"| {k} | {v:.1f} |")
    lines.append("")
    return lines


def write_report(report: dict, out: str, methods) -> str:
    """``DIR/report.md`` from the report dict (also written as report.json); ``methods``: the
    demo's Method records, in table order."""
    lines = _header(report) + _opening_tables(report) + _setup(report, methods) + _probe_tables(report)
    lines += _fabnet_sections(report, methods)
    lines += _retrieval(report) + _decoders(report) + _figures_and_times(report, out)
    path = os.path.join(out, "report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


__all__ = ["better", "versus", "with_ci", "write_report"]
