"""The study's figures: probe metrics per method over seeds, validation curves of the variants."""

from __future__ import annotations

from fabnet.demo.methods import CEILING, FABNET, FLOOR, METHODS, label
from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS


def _category_colour(name: str) -> str:
    """FAb-Net green, the floor and the ceiling grey, every other method orange."""
    kind = METHODS[name].kind if name in METHODS else None
    return "tab:green" if kind == FABNET else "tab:grey" if kind in (FLOOR, CEILING) else "tab:orange"


def study_figure(probes: dict, path: str, kind: str = "absolute") -> str:
    """One panel per task of ``probes`` ({task: {method: seed mean}}): each method's seed mean
    (bar), its 95 % interval (error bar) and the single seeds (dots); ``kind`` names the probes."""
    from fabnet.plotting import pyplot, save

    plt = pyplot()
    tasks = [t for t in TASKS if t in probes]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 4.2), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        main = MAIN_METRIC[task]
        methods = list(probes[task])
        means = [probes[task][m][main] for m in methods]
        lo = [means[i] - probes[task][m]["ci95"][main][0] for i, m in enumerate(methods)]
        hi = [probes[task][m]["ci95"][main][1] - means[i] for i, m in enumerate(methods)]
        colours = [_category_colour(m) for m in methods]
        ax.bar(range(len(methods)), means, color=colours, yerr=[lo, hi], capsize=2, alpha=0.8)
        for i, m in enumerate(methods):
            seeds = probes[task][m]["per_seed"][main]
            ax.plot([i] * len(seeds), seeds, "k.", ms=3)
        ax.set_xticks(range(len(methods)))
        ticks = [label(m).replace(", ", "\n").replace(" + ", "\n+ ").replace(" (", "\n(") for m in methods]
        ax.set_xticklabels(ticks, fontsize=5.5, rotation=90)
        arrow = "lower is better" if LOWER_IS_BETTER[main] else "higher is better"
        ax.set_title(f"{task}: {main} ({arrow})", fontsize=9)
        if "auc" in main:
            ax.axhline(0.5, color="k", lw=0.8, ls=":")
            ax.set_ylim(0.4, 1.0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{kind.capitalize()} probes: seed mean (bar), 95 % interval over test identities (error bar), single seeds "
        "(dots)",
        fontsize=9,
    )
    fig.tight_layout()
    return save(fig, path)


def validation_figure(curves: dict, warp: dict, path: str) -> str:
    """Validation L1 against step of every FAb-Net variant, first seed (the ablation's after the
    main run's steps); the no-warp L1 dashed."""
    from fabnet.plotting import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, points in curves.items():
        if points:
            steps, loss = zip(*points)
            ax.plot(
                steps,
                loss,
                "-",
                lw=1.2,
                label=label(name),
            )
    zero = [w["zero_flow_val_l1"]["mean"] for n, w in warp.items() if n in METHODS and METHODS[n].sources == 1]
    if zero:
        ax.axhline(zero[0], color="tab:red", ls="--", lw=1, label="unwarped source (1 source)")
    ax.set_xlabel("step")
    ax.set_ylabel("validation L1")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


__all__ = ["study_figure", "validation_figure"]
