"""PNG figures of a run: loss curves and the paper's Figure 4 (sources, confidences, generated).

Matplotlib's Agg backend, imported lazily: training never needs a display.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fabnet.plotting import pyplot, save
from fabnet.train.metrics import zero_flow_loss


def _image(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) numpy."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def loss_curves(metrics: list[dict], path: str, title: str = "FAb-Net training") -> str:
    """Train loss (window mean and whole batch) and validation loss against step; vertical lines
    at curriculum shifts (labelled with the new window) and learning-rate reductions."""
    plt = pyplot()
    train = [m for m in metrics if m.get("kind") == "train"]
    val = [m for m in metrics if m.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        steps = [m["step"] for m in train]
        ax.plot(
            steps, [m["loss_batch"] for m in train], color="tab:blue", alpha=0.45, lw=1, label="train L1 (whole batch)"
        )
        ax.plot(steps, [m["loss"] for m in train], color="tab:blue", lw=1.4, label="train L1 (curriculum window)")
    if val:
        ax.plot(
            [m["step"] for m in val],
            [m["val_loss"] for m in val],
            "o-",
            color="tab:red",
            ms=3.5,
            lw=1.6,
            label="validation L1",
        )
    zero = zero_flow_loss(metrics)
    if zero is not None:
        ax.axhline(zero, color="gray", ls="--", lw=1, label="validation L1 of the unwarped sources (zero flow)")
    bottom = ax.get_ylim()[0]
    first_shift = first_lr = True
    for m in val:
        if m.get("shifted"):
            ax.axvline(m["step"], color="tab:green", ls="--", lw=1, label="curriculum shift" if first_shift else None)
            lo, hi = m["window"]
            # labelled at the bottom: the legend sits in the top-right corner
            ax.text(m["step"], bottom, f" {lo:.1f}-{hi:.1f}", color="tab:green", fontsize=8, va="bottom", rotation=90)
            first_shift = False
        if m.get("lr_reduced"):
            ax.axvline(m["step"], color="tab:purple", ls=":", lw=1, label="LR / 10" if first_lr else None)
            first_lr = False
    ax.set_xlabel("step")
    ax.set_ylabel("mean |target - generated|")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return save(fig, path)


def samples_figure(
    target: torch.Tensor,
    sources: torch.Tensor,
    confidence: torch.Tensor,
    generated: torch.Tensor,
    path: str,
    title: str = "",
    loss: torch.Tensor | None = None,
) -> str:
    """One row per sample, as the paper's Figure 4: target, source 1..K, confidence 1..K
    (softmaxed over K, colour scale fixed to [0, 1]), generated frame.

    target: (N, 3, S, S); sources: (N, K, 3, S, S); confidence: (N, K, S, S); generated: (N, 3, S, S).
    """
    plt = pyplot()
    N, K = sources.shape[:2]
    cols = 2 * K + 2
    fig, axes = plt.subplots(N, cols, figsize=(1.45 * cols, 1.5 * N + 0.5), dpi=100, squeeze=False)
    for i in range(N):
        panels = [("target", _image(target[i]), None)]
        panels += [(f"source {k + 1}", _image(sources[i, k]), None) for k in range(K)]
        panels += [
            (f"confidence {k + 1}", confidence[i, k].detach().float().cpu().numpy(), "inferno") for k in range(K)
        ]
        gen_title = "generated" if loss is None else f"generated\nL1 {float(loss[i]):.3f}"
        panels += [(gen_title, _image(generated[i]), None)]
        for j, (name, img, cmap) in enumerate(panels):
            ax = axes[i, j]
            # nearest: one frame pixel = a block of screen pixels, which is also what keeps the
            # PNG small (bilinear upscaling invents colours: 480 KB instead of ~150 KB at S=64)
            if cmap:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 or name.startswith("generated\n"):
                ax.set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return save(fig, path)


_VALUE_RANGE = (0.0, 1.0)  # pixel range of the loader's tensors


@torch.no_grad()
def sample_figure(model, target: torch.Tensor, sources: torch.Tensor, count: int, path: str, title: str) -> dict:
    """Samples of a validation batch, target (B, 3, S, S) and sources (B, K, 3, S, S): the target,
    its sources, the confidences and the generated frame, for ``count`` samples spread over the
    batch. Leaves the model in eval mode. Returns what it drew: "target", "sources", "generated"
    in [0, 1] (n, 3, S, S) / (n, K, 3, S, S)."""
    model.eval()
    # Spread over the batch: the validation plan lists a track's identity's tracks together, so
    # the first ``count`` samples would often show one face.
    pick = torch.linspace(0, target.shape[0] - 1, min(count, target.shape[0])).round().long().unique()
    target, sources = target[pick], sources[pick]
    out = model.generate(target, sources)
    lo, hi = _VALUE_RANGE
    scale = lambda x: (x - lo) / (hi - lo)
    shown = dict(target=scale(target), sources=scale(sources), generated=scale(out["generated"]))
    samples_figure(
        shown["target"], shown["sources"], out["confidence"], shown["generated"], path, title=title, loss=out["loss"]
    )
    return shown
