"""The demo's and the study's figures: training curves and probe metrics per method."""

from __future__ import annotations

import os
import shutil

from fabnet.demo.methods import METHODS, label
from fabnet.plotting import pyplot, save
from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS


def figure_dir(out: str) -> str:
    d = os.path.join(out, "figures")
    os.makedirs(d, exist_ok=True)
    return d


def loss_figure(curves: dict[str, dict], path: str) -> str:
    """Training losses of every trained method against step (one panel each)."""
    plt = pyplot()
    names = [n for n in curves if curves[n].get("train")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        steps, loss = zip(*c["train"])
        ax.plot(steps, loss, lw=1, color="tab:blue", label=c.get("train_label", "train"))
        if c.get("val"):
            vs, vl = zip(*c["val"])
            ax.plot(vs, vl, "o-", ms=3, color="tab:orange", label="val L1")
        if c.get("zero_flow") is not None:  # the bar a learned warp has to beat
            ax.axhline(c["zero_flow"], color="tab:red", ls="--", lw=1, label="val L1, unwarped sources")
        for s in c.get("shifts", []):
            ax.axvline(s, color="grey", ls=":", lw=1)
        ax.set_title(label(name), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(c.get("ylabel", "loss"))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _bar_label(method: str) -> str:
    """The method's label broken into short lines: five must fit under one 3.6-inch panel."""
    text = label(method)
    if "," in text:
        return text.replace(", ", "\n").replace(" + ", "\n+ ")
    return text.replace(" ", "\n", 1)


def probe_bar_chart(probes: dict, path: str, methods) -> str:
    """One panel per task: the main test metric of each method (arrow: which way is better);
    ``methods``: the names, in the order of the bars, each in its record's colour."""
    plt = pyplot()
    tasks = [t for t in TASKS if t in probes]
    colours = {name: m.colour for name, m in METHODS.items()}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = MAIN_METRIC[task]
        ms = [m for m in methods if m in probes[task]]
        vals = [probes[task][m][metric] for m in ms]
        bars = ax.bar(range(len(ms)), vals, color=[colours.get(m, "tab:cyan") for m in ms])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.3g}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels([_bar_label(m) for m in ms], fontsize=6.5)
        arrow = "lower is better" if LOWER_IS_BETTER[metric] else "higher is better"
        ax.set_title(f"{task}: {metric}\n({arrow})", fontsize=9)
        if "auc" in metric:
            ax.axhline(0.5, color="k", lw=0.8, ls=":")
            ax.set_ylim(min(0.4, min(vals) - 0.05), 1.0)  # an AUC under 0.4 keeps its bar and label
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def fabnet_curves(result) -> dict:
    from fabnet.train.metrics import zero_flow_loss

    train = [(m["step"], m.get("loss_batch", m.get("loss"))) for m in result.metrics if m.get("kind") == "train"]
    val = [(m["step"], m["val_loss"]) for m in result.metrics if m.get("kind") == "val"]
    shifts = [m["step"] for m in result.metrics if m.get("kind") == "val" and m.get("shifted")]
    zero = zero_flow_loss(result.metrics)
    return {
        "train": train,
        "val": val,
        "shifts": shifts,
        "train_label": "train L1 (whole batch)",
        "ylabel": "L1",
        **({"zero_flow": zero} if zero is not None else {}),
    }


def copy_training_figures(run_dir: str, fig_dir: str, prefix: str) -> list[str]:
    out = []
    src = os.path.join(run_dir, "figures")
    if os.path.isdir(src):
        for name in sorted(os.listdir(src)):
            if name.endswith(".png"):
                dst = os.path.join(fig_dir, f"{prefix}_{name}")
                shutil.copyfile(os.path.join(src, name), dst)
                out.append(dst)
    return out


__all__ = ["copy_training_figures", "fabnet_curves", "figure_dir", "loss_figure", "probe_bar_chart"]
