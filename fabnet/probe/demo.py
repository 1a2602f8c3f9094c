"""``fabnet demo``: the whole method on synthetic faces, from data to a report, on a CPU.

1. Render a synthetic data root for training (identity-disjoint train / val / test) and,
   apart, a labelled probe set of identities the training never sees.
2. Train FAb-Net with one source frame; then three source frames with the curriculum, started
   from the one-source model (the paper's schedule, shrunk).
3. Baselines on the same frames: a random-init encoder and the autoencoder (optionally the
   rotation-prediction network).
4. Embed the probe set with every frozen encoder, with the raw pixels (the no-learning
   reference) and with random features (the noise floor), fit the linear probes (landmarks,
   pose, expression, attributes) and score them on its test identities with 95 % intervals.
5. Cross-identity retrieval on those test identities, and what the FAb-Net decoders read from
   the target embedding (``fabnet.probe.swap``: the warp with that embedding swapped out).
6. Write ``DIR/report.md``, ``DIR/report.json`` and ``DIR/figures/*.png``.

Sizes are chosen for a 2-core CPU: ``DemoConfig.full()`` takes about 13 minutes (789 s
measured on 2026-12-01), ``quick()`` under one."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np

from fabnet.probe.tasks import LOWER_IS_BETTER, MAIN_METRIC, TASKS

METHODS = ("fabnet_1src", "fabnet_3src_curriculum", "autoencoder", "random_init", "pixels", "noise")
METHOD_LABELS = {
    "fabnet_1src": "FAb-Net, 1 source",
    "fabnet_3src_curriculum": "FAb-Net, 3 sources + curriculum",
    "autoencoder": "autoencoder",
    "random_init": "random-init encoder",
    "pixels": "raw pixels",
    "noise": "random features (noise floor)",
    "rotation": "rotation prediction",
}


@dataclass
class DemoConfig:
    """Sizes of one demo run.

    identities, tracks_per_identity, frames_per_track, image_size: the synthetic data (frames
    are rendered at ``image_size`` and the evaluation crop, 180/256 of the side, is resized to
    ``size``). size: network input side S. steps_1src / steps_3src: FAb-Net optimiser steps
    per stage, batch_1src / batch_3src their batch sizes, val_every the validation period (steps).
    patience_1src: validation rounds without improvement before stage 1 divides the LR by 10
    (its validation uses 2 batches, so a patience of 1 would cut the LR on noise alone);
    patience: the curriculum's plateau patience in stage 2. lr, momentum, weight_decay: SGD
    (FAb-Net's optimiser; the baselines use the same). ae_steps / ae_batch: autoencoder.
    rotation_steps: 0 leaves the rotation baseline out. probe_*: the linear probes.
    heatmap_samples: rows of the confidence figure (test tracks).
    """

    identities: int = 60
    tracks_per_identity: int = 3
    frames_per_track: int = 16
    image_size: int = 64
    size: int = 32
    # The probe set: people never seen in training, rendered apart (another seed), split by
    # identity 60/10/30 into probe-fit / probe-validation / test. 500 identities give 150 test
    # identities: enough for identity-bootstrap intervals narrower than the gaps between methods.
    probe_identities: int = 500
    probe_frames: int = 4
    steps_1src: int = 2000
    batch_1src: int = 16
    # Stage 2 at batch 16: the curriculum's first window (0-50 % of the sorted losses) is 8 samples.
    steps_3src: int = 1000
    batch_3src: int = 16
    val_every: int = 50
    val_batches: int = 8  # x 16 = 128 fixed validation pairs
    patience_1src: int = 16
    patience: int = 16
    # Adam from the identity warp (fabnet.train.config.PAPER has the paper's SGD): the flow
    # decoder's last conv starts at zero, so the warp starts at the no-warp loss and improves.
    optimizer: str = "adam"
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    ae_steps: int = 2000  # as many as FAb-Net's stage 1
    ae_batch: int = 16
    rotation_steps: int = 0
    probe_max_epochs: int = 200
    probe_patience: int = 15
    probe_batch: int = 64
    retrieval_queries: int = 6
    retrieval_k: int = 6
    heatmap_samples: int = 4
    seed: int = 0
    name: str = "custom"

    @classmethod
    def full(cls) -> DemoConfig:
        return cls(name="full")

    @classmethod
    def quick(cls) -> DemoConfig:
        # Every stage runs, on a toy budget: the numbers of a quick run say nothing about the method.
        return cls(identities=24, tracks_per_identity=2, frames_per_track=8, image_size=48, size=32,
                   probe_identities=40, probe_frames=3,
                   steps_1src=20, batch_1src=8, steps_3src=8, batch_3src=4, val_every=10, val_batches=2,
                   patience_1src=2,
                   ae_steps=20, ae_batch=8, probe_max_epochs=40, probe_patience=8, probe_batch=64,
                   retrieval_queries=4, retrieval_k=5, heatmap_samples=3, name="quick")  # fmt: skip


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _synth(cfg: DemoConfig, root: str, workers: int, progress: bool = False) -> dict:
    from fabnet.data.synth import synthesize

    stamp = os.path.join(root, "demo_data.json")
    want = {k: getattr(cfg, k) for k in ("identities", "tracks_per_identity", "frames_per_track", "image_size", "seed")}
    if os.path.exists(stamp) and os.path.exists(os.path.join(root, "labels.csv")):
        with open(stamp) as fh:
            if json.load(fh) == want:
                _log(f"reusing the synthetic data in {root}")
                return {"reused": True}
    t0 = time.perf_counter()
    synthesize(root, cfg.identities, cfg.tracks_per_identity, cfg.frames_per_track, size=cfg.image_size,
               seed=cfg.seed, workers=workers, progress=progress)  # fmt: skip
    with open(stamp, "w") as fh:
        json.dump(want, fh)
    return {"reused": False, "wall_s": round(time.perf_counter() - t0, 1)}


# Split of the probe set by identity: fit the probes / stop their training / test.
PROBE_SPLIT = (0.6, 0.1, 0.3)
# The probe set's people are drawn with this seed offset: fabnet.data.synth draws identity i
# from (seed, i), so another seed gives other people than the training data's.
PROBE_SEED_OFFSET = 10_000


def _synth_probe_set(cfg: DemoConfig, root: str, workers: int, progress: bool = False) -> dict:
    """The labelled probe set: ``probe_identities`` people unseen in training, one track of
    ``probe_frames`` frames each, with the split written into labels.csv (PROBE_SPLIT)."""
    from fabnet.data.labels import write_labels
    from fabnet.data.synth import identity_name, synthesize

    stamp = os.path.join(root, "demo_probe_data.json")
    want = {"identities": cfg.probe_identities, "frames": cfg.probe_frames, "image_size": cfg.image_size,
            "seed": cfg.seed + PROBE_SEED_OFFSET, "split": PROBE_SPLIT}  # fmt: skip
    if os.path.exists(stamp) and os.path.exists(os.path.join(root, "labels.csv")):
        with open(stamp) as fh:
            if json.load(fh) == json.loads(json.dumps(want)):
                _log(f"reusing the probe set in {root}")
                return {"reused": True}
    t0 = time.perf_counter()
    records = synthesize(root, cfg.probe_identities, 1, cfg.probe_frames, size=cfg.image_size,
                         seed=cfg.seed + PROBE_SEED_OFFSET, workers=workers, progress=progress,
                         previews=False)  # fmt: skip
    n_fit = round(PROBE_SPLIT[0] * cfg.probe_identities)
    n_val = max(1, round(PROBE_SPLIT[1] * cfg.probe_identities))
    split_of = {identity_name(i): "train" if i < n_fit else "val" if i < n_fit + n_val else "test"
                for i in range(cfg.probe_identities)}  # fmt: skip
    for r in records:
        r.split = split_of[r.identity]
    write_labels(root, records)
    with open(stamp, "w") as fh:
        json.dump(want, fh)
    return {"reused": False, "wall_s": round(time.perf_counter() - t0, 1)}


class DemoInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the demo during ``stage``; what was trained is on disk."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


def _finished_run(run: str, steps: int):
    """The TrainResult of a training run in ``run`` that reached ``steps``, read from its files
    (so a demo run again with the same --out reuses it); None if there is none."""
    from fabnet.train.config import TrainResult
    from fabnet.train.metrics import read_metrics

    last = os.path.join(run, "checkpoints", "last.pt")
    metrics = os.path.join(run, "metrics.jsonl")
    if not (os.path.exists(last) and os.path.exists(metrics)):
        return None
    records = read_metrics(metrics)
    ends = [r for r in records if r.get("kind") == "end"]
    if not ends or ends[-1].get("interrupted") or ends[-1].get("step") != steps:
        return None
    best = os.path.join(run, "checkpoints", "best.pt")
    return TrainResult(checkpoint=last, best_val=ends[-1].get("best_val", math.inf), metrics=records, step=steps,
                       epoch=ends[-1].get("epoch", 0), run_dir=run,
                       best_checkpoint=best if os.path.exists(best) else None)  # fmt: skip


def _train_fabnet(cfg: DemoConfig, data: str, run: str, *, num_sources: int, steps: int, batch: int,
                  curriculum: bool, init: str | None, patience: int, progress: bool):  # fmt: skip
    """Train one FAb-Net stage; a stage finished earlier in ``run`` is reused, one interrupted is
    resumed. KeyboardInterrupt when a signal stops it (its checkpoint is saved)."""
    from fabnet.train import TrainConfig, train

    done = _finished_run(run, steps)
    if done is not None:
        _log(f"reusing the finished run in {run}")
        return done
    resume = os.path.exists(os.path.join(run, "checkpoints", "last.pt"))
    if resume:
        _log(f"resuming the interrupted run in {run}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = dict(data=data, out=run, size=cfg.size, num_sources=num_sources, batch_size=batch, steps=steps,
                  curriculum=curriculum, patience=patience, optimizer=cfg.optimizer, lr=cfg.lr,
                  momentum=cfg.momentum, weight_decay=cfg.weight_decay, init=init, resume=resume,
                  # The release freezes the flow decoder in the K-source stage; here it keeps
                  # learning, so stage 2 can improve the warp it blends.
                  freeze_flow_decoder=False, seed=cfg.seed, val_every=cfg.val_every,
                  val_batches=cfg.val_batches, checkpoint_every=0, log_every=5, figure_every=0, figure_samples=4,
                  device="cpu", data_backend="pil", num_workers=0, progress=progress)  # fmt: skip
    result = train(TrainConfig(**{k: v for k, v in kwargs.items() if k in fields}))
    if result.interrupted:  # the signal was taken by train(), which saved a checkpoint first
        raise KeyboardInterrupt
    return result


def _baseline(bcfg, train_records, path: str, images, progress: bool):
    """A baseline's BaselineResult: the checkpoint at ``path`` when it was trained with ``bcfg``
    (a demo run again with the same --out), else trained now."""
    from fabnet.model.checkpoint import load_checkpoint
    from fabnet.train.baselines import BaselineResult, train_baseline

    if os.path.exists(path):
        try:
            state = load_checkpoint(path)
        except (OSError, ValueError):
            state = {}
        if state.get("baseline_config") == asdict(bcfg):
            _log(f"reusing {path}")
            return BaselineResult(path, list(state.get("losses", [])), 0.0, asdict(bcfg))
    return train_baseline(bcfg, train_records, path, images=images, progress=progress)


def _fig_dir(out: str) -> str:
    d = os.path.join(out, "figures")
    os.makedirs(d, exist_ok=True)
    return d


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def loss_figure(curves: dict[str, dict], path: str) -> str:
    """Training losses of every trained method against step (one panel each)."""
    plt = _plt()
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
        ax.set_title(METHOD_LABELS.get(name, name), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(c.get("ylabel", "loss"))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _bar_label(method: str) -> str:
    """The method's label broken into short lines: five must fit under one 3.6-inch panel."""
    label = METHOD_LABELS.get(method, method)
    if "," in label:
        return label.replace(", ", "\n").replace(" + ", "\n+ ")
    return label.replace(" ", "\n", 1)


def probe_bar_chart(probes: dict, path: str, methods=METHODS) -> str:
    """One panel per task: the main test metric of each method (arrow: which way is better)."""
    plt = _plt()
    tasks = [t for t in TASKS if t in probes]
    colours = {"fabnet_1src": "tab:blue", "fabnet_3src_curriculum": "tab:green", "autoencoder": "tab:orange",
               "random_init": "tab:grey", "rotation": "tab:purple", "pixels": "tab:brown",
               "noise": "tab:olive"}  # fmt: skip
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
    fig.savefig(path)
    plt.close(fig)
    return path


def _fabnet_curves(result) -> dict:
    from fabnet.train.figures import zero_flow_loss

    train = [(m["step"], m.get("loss_batch", m.get("loss"))) for m in result.metrics if m.get("kind") == "train"]
    val = [(m["step"], m["val_loss"]) for m in result.metrics if m.get("kind") == "val"]
    shifts = [m["step"] for m in result.metrics if m.get("kind") == "val" and m.get("shifted")]
    zero = zero_flow_loss(result.metrics)
    return {"train": train, "val": val, "shifts": shifts, "train_label": "train L1 (whole batch)", "ylabel": "L1",
            **({"zero_flow": zero} if zero is not None else {})}  # fmt: skip


def _copy_training_figures(run_dir: str, fig_dir: str, prefix: str) -> list[str]:
    out = []
    src = os.path.join(run_dir, "figures")
    if os.path.isdir(src):
        for name in sorted(os.listdir(src)):
            if name.endswith(".png"):
                dst = os.path.join(fig_dir, f"{prefix}_{name}")
                shutil.copyfile(os.path.join(src, name), dst)
                out.append(dst)
    return out


def _spread_sources(track, t: int, num_sources: int):
    """The K frames of ``track`` (target index ``t`` left out) at evenly spaced yaw ranks."""
    rest = sorted((r for i, r in enumerate(track) if i != t), key=lambda r: float(r.pose[0]))
    picks = np.linspace(0, len(rest) - 1, num_sources).round().astype(int)
    return [rest[i] for i in picks]


def _test_tracks(test_records, num_sources: int):
    """Test tracks with at least K + 1 frames (shorter ones are skipped silently)."""
    import warnings

    from fabnet.data.index import group_tracks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return group_tracks(test_records, num_sources + 1)


def _confidence_examples(test_records, num_sources: int, count: int, seed: int):
    """Samples for the confidence figure: (target, sources) record lists, one per test track.

    Tracks in a seeded random order; the target is a random frame and the K sources are spread
    over the rest of the track's yaw range (its frames sorted by yaw, K picked at evenly spaced
    ranks), so that they differ in pose and the confidence has something to choose between.
    Returns at most ``count`` samples.
    """
    rng = np.random.default_rng(seed)
    tracks = _test_tracks(test_records, num_sources)
    samples = []
    for ti in rng.permutation(len(tracks))[:count]:
        t = int(rng.integers(len(tracks[ti])))
        samples.append((tracks[ti][t], _spread_sources(tracks[ti], t, num_sources)))
    return samples


def _every_target(test_records, num_sources: int):
    """Samples for the confidence statistic: every frame of every test track as the target once,
    its K sources spread in yaw as in ``_confidence_examples``. No random draw: one random target
    per track (18 samples on the demo's test split) gave a pose-nearest share anywhere from 49 % to
    74 % over ten seeds for the same checkpoint."""
    return [(track[t], _spread_sources(track, t, num_sources))
            for track in _test_tracks(test_records, num_sources) for t in range(len(track))]  # fmt: skip


def confidence_figure(target, sources, confidence, generated, pose_target, pose_sources, path: str) -> str:
    """Rows of: target, K sources, their K confidence maps, the most confident source per pixel, the blend.

    target, generated: (N, 3, S, S) in [0, 1]; sources: (N, K, 3, S, S); confidence: (N, K, S, S)
    softmaxed over K; pose_target: (N, 3), pose_sources: (N, K, 3) degrees (yaw shown). The K
    confidence maps share one colour scale from 0 to the largest value in the figure (colour bar
    at the right), so that a selection far from 1 is still visible; the "most confident" map
    colours each pixel by the frame colour of the source that wins it.
    """
    plt = _plt()
    from matplotlib.colors import ListedColormap

    n, k = sources.shape[:2]
    palette = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"][:k]
    vmax = float(confidence.max())
    cols = 2 * k + 3
    fig, axes = plt.subplots(n, cols, figsize=(1.35 * cols + 0.6, 1.45 * n + 0.7), dpi=100, squeeze=False)
    img = lambda x: x.detach().float().clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
    for i in range(n):
        row = axes[i]
        row[0].imshow(img(target[i]))
        row[0].set_title(f"target\nyaw {pose_target[i, 0]:+.0f}", fontsize=7)
        for j in range(k):
            ax = row[1 + j]
            ax.imshow(img(sources[i, j]))
            ax.set_title(f"source {j + 1}\nyaw {pose_sources[i, j, 0]:+.0f}", fontsize=7, color=palette[j])
            for side in ax.spines.values():
                side.set_edgecolor(palette[j])
                side.set_linewidth(2.5)
            im = row[1 + k + j].imshow(confidence[i, j].numpy(), cmap="inferno", vmin=0.0, vmax=vmax)
            row[1 + k + j].set_title(f"confidence {j + 1}\nmean {float(confidence[i, j].mean()):.2f}", fontsize=7)
        row[1 + 2 * k].imshow(confidence[i].argmax(0).numpy(), cmap=ListedColormap(palette), vmin=-0.5,
                              vmax=k - 0.5, interpolation="nearest")  # fmt: skip
        row[1 + 2 * k].set_title("most confident\nsource", fontsize=7)
        row[2 + 2 * k].imshow(img(generated[i]))
        row[2 + 2 * k].set_title("generated", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(left=0.01, right=0.9, top=1 - 0.75 / fig.get_figheight(), bottom=0.02, wspace=0.08,
                        hspace=0.45)  # fmt: skip
    cax = fig.add_axes([0.915, 0.1, 0.012, 0.75])
    fig.colorbar(im, cax=cax).set_label(f"confidence (softmax over K; 1/K = {1 / k:.2f})", fontsize=7)
    fig.suptitle(f"3-source FAb-Net on test tracks: {k} sources spread in yaw, their confidences and the blend",
                 fontsize=9)  # fmt: skip
    fig.savefig(path)
    plt.close(fig)
    return path


def confidence_study(checkpoint: str, test_records, path: str, *, rows: int = 4, seed: int = 0) -> dict:
    """The K-source model's confidence maps on test tracks (figure) and how selective they are.

    Figure (``path``): ``rows`` test tracks, one row each: the target (a random frame), the K
    sources (spread in yaw), their confidence maps (softmax over K), the most confident source per
    pixel and the generated frame.
    Statistic over every frame of every test track as the target (``_every_target``):
    ``max_confidence_mean``, the mean over pixels of the largest of the K confidences (1/K
    everywhere = no selection), and ``nearest_pose_share``, the fraction of pixels whose most
    confident source is the one closest in pose (|yaw| + |pitch| + |roll|) to the target
    (chance: 1/K).
    """
    import torch

    from fabnet.model import build_model, load_checkpoint
    from fabnet.probe.frames import record_crops

    model = build_model(load_checkpoint(checkpoint, "cpu"), op_backend="auto")
    model.eval()
    k, size = model.num_sources, model.size
    samples = _every_target(test_records, k)
    if not samples:
        return {}

    target = record_crops([t for t, _ in samples], size)
    sources = torch.stack([record_crops(srcs, size) for _, srcs in samples])  # (N, K, 3, S, S)
    with torch.no_grad():
        out = model.generate(target, sources)
    conf = out["confidence"]  # (N, K, S, S)
    pose_t = np.stack([t.pose for t, _ in samples]).astype(np.float64)
    pose_s = np.stack([[r.pose for r in srcs] for _, srcs in samples]).astype(np.float64)
    nearest = np.abs(pose_s - pose_t[:, None]).sum(-1).argmin(1)  # (N,)
    chosen = conf.argmax(1).numpy()  # (N, S, S)
    share = float((chosen == nearest[:, None, None]).mean())

    # The figure's rows are samples the statistic already ran (same target, same sources).
    row_of = {id(t): i for i, (t, _) in enumerate(samples)}
    rows_shown = [row_of[id(t)] for t, _ in _confidence_examples(test_records, k, rows, seed)]
    confidence_figure(target[rows_shown], sources[rows_shown], conf[rows_shown], out["generated"][rows_shown],
                      pose_t[rows_shown], pose_s[rows_shown], path)  # fmt: skip
    return {"png": path, "samples": len(samples), "num_sources": k,
            "max_confidence_mean": round(float(conf.max(1).values.mean()), 4),
            "nearest_pose_share": round(share, 4), "chance_share": round(1.0 / k, 4)}  # fmt: skip


def _better(task: str, a: float, b: float) -> bool:
    return a < b if LOWER_IS_BETTER[MAIN_METRIC[task]] else a > b


def _versus(task: str, a: dict, b: dict) -> str:
    """ "ahead of" / "behind" when the two 95 % intervals do not overlap, else "level with (the
    intervals overlap)"; without intervals, the bare order of the two numbers."""
    metric = MAIN_METRIC[task]
    ca, cb = a.get("ci95", {}).get(metric), b.get("ci95", {}).get(metric)
    if ca is None or cb is None:
        return "ahead of" if _better(task, a[metric], b[metric]) else "not ahead of"
    if ca[1] < cb[0] or cb[1] < ca[0]:
        return "ahead of" if _better(task, a[metric], b[metric]) else "behind"
    return "level with (the intervals overlap)"


def _with_ci(task: str, metrics: dict) -> str:
    metric = MAIN_METRIC[task]
    ci = metrics.get("ci95", {}).get(metric)
    return f"{metrics[metric]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _comparison_text(probes: dict) -> list[str]:
    """Which method is ahead on each task, from the numbers and their intervals only: a method
    is "ahead" of another only where their 95 % intervals over test identities do not overlap."""
    lines = []
    for task in TASKS:
        results = probes.get(task, {})
        if "fabnet_1src" not in results or "fabnet_3src_curriculum" not in results:
            continue
        three, one = results["fabnet_3src_curriculum"], results["fabnet_1src"]
        line = (f"- **{task}** ({MAIN_METRIC[task]}): 3 sources + curriculum {_with_ci(task, three)} is "
                f"{_versus(task, three, one)} 1 source {_with_ci(task, one)}")  # fmt: skip
        others = [m for m in ("random_init", "pixels", "autoencoder", "noise") if m in results]
        if others:
            line += "; against the baselines, 3 sources + curriculum is " + ", ".join(
                f"{_versus(task, three, results[m])} {m} {_with_ci(task, results[m])}" for m in others
            )
        lines.append(line + ".")
    for task in TASKS:
        if probes.get(task):
            metric = MAIN_METRIC[task]
            ranked = sorted(probes[task], key=lambda m: probes[task][m][metric],
                            reverse=not LOWER_IS_BETTER[metric])  # fmt: skip
            lines.append(
                f"- {task}, best to worst: " + ", ".join(f"{m} ({probes[task][m][metric]:.3f})" for m in ranked) + "."
            )
    return lines


def write_report(report: dict, out: str) -> str:
    """``DIR/report.md`` from the report dict (also written as report.json)."""
    from fabnet.probe.pipeline import format_table

    cfg = report["config"]
    probes = report["probes"]
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
        f"- Networks at S = {cfg['size']}, 256-d embedding, decoders' last conv initialised to zero (the warp "
        f"starts as the identity, confidences equal). FAb-Net stage 1: 1 source, {cfg['steps_1src']} "
        f"{cfg['optimizer']} steps of {cfg['batch_1src']} (lr {cfg['lr']}, weight decay "
        f"{cfg.get('weight_decay', 0)}, LR divided by 10 after {cfg['patience_1src']} validation rounds without "
        f"improvement; validation every {cfg['val_every']} steps on {cfg['val_batches'] * cfg['batch_1src']} "
        "fixed pairs), no curriculum. Stage 2: 3 sources, curriculum, initialised from stage 1, flow decoder "
        f"trained too (the original release froze it), {cfg['steps_3src']} more steps of {cfg['batch_3src']} "
        "(curriculum window shifted by 10 points, then the LR divided by 10, after "
        f"{cfg['patience']} validation rounds without improvement).",
        f"- Baselines: random-init encoder (BatchNorm statistics re-estimated on train frames, no training); "
        f"autoencoder (same encoder + decoder, L1 reconstruction), {cfg['ae_steps']} steps of {cfg['ae_batch']}, "
        f"same optimiser settings"
        + (f"; rotation prediction, {cfg['rotation_steps']} steps" if cfg["rotation_steps"] else "")
        + f"; raw pixels (no network: the {cfg['size']} x {cfg['size']} crop itself, {3 * cfg['size'] ** 2} values, "
        "read by the same probe and the same cosine retrieval); random features (256 normal values fixed per "
        "frame: the noise floor).",
        "- Probes: BatchNorm1d(D) + Linear(D, k, bias=False) on the frozen embedding of the centre crop (D = 256; "
        f"{3 * cfg['size'] ** 2} for raw pixels), "
        f"Adam lr 1e-3, batch {cfg['probe_batch']}, early stopping on the probe set's validation identities "
        f"(patience {cfg['probe_patience']} epochs, at most {cfg['probe_max_epochs']}); metrics on its test "
        "identities.",
        "",
        "## Linear probes (test split)",
        "",
        format_table(probes),
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
        lines.append(f"| {m} | {v.get('mae_yaw', float('nan')):.2f} | {v.get('mae_pitch', float('nan')):.2f} | "
                     f"{v.get('mae_roll', float('nan')):.2f} |")  # fmt: skip
    lines += ["", "## 1 source vs 3 sources + curriculum", ""]
    lines += _comparison_text(probes)
    lines += [
        "",
        "The 3-source model is the 1-source model trained for "
        f"{cfg['steps_3src']} more steps, so it also had more training; at this scale (minutes of CPU, "
        "a few thousand steps, a single seed) differences of a few tenths are within run-to-run noise and "
        "say nothing either way about the paper's Table 1.",
        "",
    ]
    zero, best = report.get("zero_flow_val_l1", {}), report.get("best_val_l1", {})
    if zero:
        lines += ["## How much of the warp was learned", ""]
        for m, what in (("fabnet_1src", "the unwarped source"),
                        ("fabnet_3src_curriculum", "the equal-weight blend of the unwarped sources")):  # fmt: skip
            if m in zero and m in best:
                gain = 100 * (1 - best[m] / zero[m])
                lines.append(f"- {m}: best validation L1 {best[m]:.4f}; {what} gives {zero[m]:.4f} "
                             f"({gain:.0f}% lower with the learned warp).")  # fmt: skip
        lines += ["", "The gap is the part of the frame-to-frame change that the learned flows explain: the "
                  "flow decoder reads nothing but the two embeddings, so pose reaches the embedding only as far "
                  "as the warp has been learned. The `*_samples_final` figures show the warps themselves.",
                  ""]  # fmt: skip
    lines += ["## Retrieval", ""]
    for m, r in report.get("retrieval", {}).items():
        if "neighbour_pose_diff_deg" in r:
            n, rd = r["neighbour_pose_diff_deg"], r["random_pose_diff_deg"]
            lines.append(f"- {m}: mean |yaw, pitch, roll| difference between a test query and its top-"
                         f"{cfg['retrieval_k']} other-identity neighbours {n[0]:.1f} / {n[1]:.1f} / {n[2]:.1f} deg "
                         f"(random other-identity frames: {rd[0]:.1f} / {rd[1]:.1f} / {rd[2]:.1f})"
                         + (f"; {100 * r['identity_share']:.0f}% of the embedding variance lies between identities"
                            if "identity_share" in r else "")
                         + (f"; pose explains {100 * r['within_track_pose_r2']:.0f}% of the frame-to-frame "
                            "(within-track) variance" if "within_track_pose_r2" in r else "") + ".")  # fmt: skip
    if any("identity_share" in r for r in report.get("retrieval", {}).values()):
        lines += ["", "Where most of the variance lies between identities, the nearest other identity is the "
                  "most similar-looking one (skin, hair, background, light) and its frames come first whatever "
                  "their pose: neighbours are pose-matched only as far as the difference to random frames above "
                  "shows. The within-track figure is the other half: with every track's mean removed (identity "
                  "with it), it is the R^2 of a least-squares fit of the embedding's frame-to-frame change on the "
                  "pose change, i.e. how much of what moves the embedding within one face is pose."]  # fmt: skip
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
        labels = {"own": "its own (as trained)", "same_track_other": "another frame of the same track",
                  "track_mean": "the mean of its track", "other_identity_pose": "another identity, nearest pose",
                  "other_identity_random": "another identity, random frame",
                  "unwarped": "none: unwarped sources, equal weights"}  # fmt: skip
        for cond, label in labels.items():
            if all(cond in r["l1"] for r in swap.values()):
                lines.append(f"| {label} | " + " | ".join(f"{r['l1'][cond]:.4f}" for r in swap.values()) + " |")
        lines += ["", "If the embedding coded pose the same way for every face, the pose-matched frame of another "
                  "identity would come close to the target's own embedding. Where it is no better than a random "
                  "frame of another identity, the decoders read the pose only relative to the face's own "
                  "identity, and cosine neighbours across identities cannot be pose-matched by this "
                  "embedding."]  # fmt: skip
    conf = report.get("confidence") or {}
    if conf:
        lines += ["", "## Confidence of the 3-source model", "",
                  f"Over {conf['samples']} test targets (every frame of every test track, its {conf['num_sources']} "
                  f"sources spread over the rest of the track's yaw range): the largest of the "
                  f"{conf['num_sources']} confidences averages "
                  f"{conf['max_confidence_mean']:.3f} per pixel ({1 / conf['num_sources']:.3f} = no selection), and "
                  f"the source closest in pose to the target is the most confident one on "
                  f"{100 * conf['nearest_pose_share']:.1f}% of the pixels (chance {100 * conf['chance_share']:.1f}%). "
                  "Figure: `figures/confidence_heatmaps.png`."]  # fmt: skip
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
    path = os.path.join(out, "report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


class _Stage:
    """The stage the demo is in, named in the message when it is interrupted."""

    name = "setup"


def run_demo(cfg: DemoConfig, out: str, *, workers: int = 1, keep_data: str | None = None,
             progress: bool = True) -> dict:  # fmt: skip
    """Run every stage; returns the report dict (also DIR/report.json, DIR/report.md).

    out: output directory. workers: processes rendering the data. keep_data: the synthetic
    data root (default DIR/data; reused when it was made with the same sizes and seed).
    progress: tqdm bars for training, baselines and embedding.

    Ctrl-C stops the whole demo with DemoInterrupted naming the stage; trained stages and
    checkpoints stay in DIR, and the same call with the same ``out`` continues: finished
    training runs and baselines are reused, an interrupted FAb-Net run is resumed.
    """
    stage = _Stage()
    try:
        return _run_stages(cfg, out, workers=workers, keep_data=keep_data, progress=progress, stage=stage)
    except KeyboardInterrupt:
        raise DemoInterrupted(stage.name) from None


def _run_stages(cfg: DemoConfig, out: str, *, workers: int, keep_data: str | None, progress: bool,
                stage: _Stage) -> dict:  # fmt: skip
    from fabnet.data.index import load_index
    from fabnet.data.labels import label_info
    from fabnet.train.baselines import BaselineConfig, preload
    from fabnet.probe.linear import ProbeConfig
    from fabnet.probe.pipeline import dump_json, embed_splits, format_table, probe_task, retrieval_figure

    t_start = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]  # the machine may be shared: timings depend on it
    os.makedirs(out, exist_ok=True)
    fig_dir = _fig_dir(out)
    data = keep_data or os.path.join(out, "data")
    wall: dict[str, float] = {}
    figures: dict[str, str] = {}
    curves: dict[str, dict] = {}
    checkpoints: dict[str, str] = {}

    def timed(key: str, t0: float) -> None:
        wall[key] = round(time.perf_counter() - t0, 1)

    stage.name = "synthetic data"
    _log(f"{cfg.name} demo into {out}: synthesising data")
    t0 = time.perf_counter()
    synth_info = _synth(cfg, data, workers, progress)
    timed("synth", t0)
    t0 = time.perf_counter()
    probe_data = (keep_data.rstrip("/") + "_probe") if keep_data else os.path.join(out, "probe_data")
    _log(f"synthesising the probe set ({cfg.probe_identities} unseen identities)")
    _synth_probe_set(cfg, probe_data, workers, progress)
    timed("synth_probe_set", t0)
    probe_records = load_index(probe_data)
    probe_test_ids = sorted({r.identity for r in probe_records if r.split == "test"})
    records = load_index(data)
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    test_ids = sorted({r.identity for r in records if r.split == "test"})

    stage.name = "FAb-Net 1 source"
    _log(f"training FAb-Net, 1 source, {cfg.steps_1src} steps")
    t0 = time.perf_counter()
    r1 = _train_fabnet(cfg, data, os.path.join(out, "runs", "fabnet_1src"), num_sources=1, steps=cfg.steps_1src,
                       batch=cfg.batch_1src, curriculum=False, init=None, patience=cfg.patience_1src,
                       progress=progress)  # fmt: skip
    timed("train_fabnet_1src", t0)
    checkpoints["fabnet_1src"] = r1.checkpoint
    curves["fabnet_1src"] = _fabnet_curves(r1)

    stage.name = "FAb-Net 3 sources + curriculum"
    _log(f"training FAb-Net, 3 sources + curriculum from the 1-source model, {cfg.steps_3src} steps")
    t0 = time.perf_counter()
    r3 = _train_fabnet(cfg, data, os.path.join(out, "runs", "fabnet_3src_curriculum"), num_sources=3,
                       steps=cfg.steps_3src, batch=cfg.batch_3src, curriculum=True, init=r1.checkpoint,
                       patience=cfg.patience, progress=progress)  # fmt: skip
    timed("train_fabnet_3src_curriculum", t0)
    checkpoints["fabnet_3src_curriculum"] = r3.checkpoint
    curves["fabnet_3src_curriculum"] = _fabnet_curves(r3)
    for name, res in (("fabnet_1src", r1), ("fabnet_3src_curriculum", r3)):
        for path in _copy_training_figures(res.run_dir, fig_dir, name):
            figures[os.path.splitext(os.path.basename(path))[0]] = path
    stage.name = "confidence and swap studies"
    t0 = time.perf_counter()
    test_records = [r for r in records if r.split == "test"]
    confidence = confidence_study(r3.checkpoint, test_records,
                                  os.path.join(fig_dir, "confidence_heatmaps.png"), rows=cfg.heatmap_samples,
                                  seed=cfg.seed)  # fmt: skip
    if confidence:
        figures["confidence_heatmaps"] = confidence["png"]
    timed("confidence_study", t0)
    t0 = time.perf_counter()
    from fabnet.probe.swap import target_swap_study

    target_swap = {name: target_swap_study(res.checkpoint, test_records, seed=cfg.seed)
                   for name, res in (("fabnet_1src", r1), ("fabnet_3src_curriculum", r3))}  # fmt: skip
    timed("target_swap_study", t0)

    train_records = [r for r in records if r.split == "train"]
    images = preload(train_records)
    baselines = [("random_init", 0, cfg.ae_batch), ("autoencoder", cfg.ae_steps, cfg.ae_batch)]
    if cfg.rotation_steps:
        baselines.append(("rotation", cfg.rotation_steps, cfg.ae_batch))
    for method, steps, batch in baselines:
        _log(f"baseline {method}" + (f", {steps} steps" if steps else ""))
        t0 = time.perf_counter()
        bcfg = BaselineConfig(method=method, size=cfg.size, steps=steps, batch_size=batch, optimizer=cfg.optimizer,
                              lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              seed=cfg.seed)  # fmt: skip
        stage.name = f"baseline {method}"
        res = _baseline(bcfg, train_records, os.path.join(out, "runs", method, "checkpoint.pt"), images, progress)
        timed(f"train_{method}", t0)
        checkpoints[method] = res.checkpoint
        if res.losses:
            curves[method] = {"train": list(enumerate(res.losses, 1)),
                              "ylabel": "L1" if method == "autoencoder" else "cross-entropy",
                              "train_label": "train loss"}  # fmt: skip
    del images
    figures["loss_curves"] = loss_figure(curves, os.path.join(fig_dir, "loss_curves.png"))

    info = label_info(data)
    pcfg = ProbeConfig(batch_size=cfg.probe_batch, max_epochs=cfg.probe_max_epochs, patience=cfg.probe_patience,
                       seed=cfg.seed)  # fmt: skip
    probes: dict[str, dict] = {t: {} for t in TASKS}
    retrieval: dict[str, dict] = {}
    from fabnet.probe.noise import NoiseEncoder
    from fabnet.probe.pixels import PixelEncoder

    # A checkpoint path or the encoder itself.
    encoders = {**checkpoints, "pixels": PixelEncoder(cfg.size), "noise": NoiseEncoder(cfg.size, seed=cfg.seed)}
    for method, encoder in encoders.items():
        stage.name = f"embedding and probing {method}"
        _log(f"embedding and probing {method}")
        t0 = time.perf_counter()
        emb = embed_splits(encoder, probe_data, progress=progress)
        timed(f"embed_{method}", t0)
        t0 = time.perf_counter()
        for task in TASKS:
            metrics, _ = probe_task(task, emb, config=pcfg, info=info)
            probes[task][method] = metrics
        timed(f"probe_{method}", t0)
        png = os.path.join(fig_dir, f"retrieval_{method}.png")
        retrieval[method] = retrieval_figure(emb["test"], png, queries=cfg.retrieval_queries, k=cfg.retrieval_k,
                                             seed=cfg.seed, title=f"{METHOD_LABELS.get(method, method)}: "
                                             "test queries (red) and cross-identity cosine neighbours")  # fmt: skip
        figures[f"retrieval_{method}"] = png
    figures["probe_metrics"] = probe_bar_chart(probes, os.path.join(fig_dir, "probe_metrics.png"),
                                               methods=list(encoders))  # fmt: skip
    wall["total"] = round(time.perf_counter() - t_start, 1)

    sizes = {"identities": cfg.identities, "tracks_per_identity": cfg.tracks_per_identity,
             "frames_per_track": cfg.frames_per_track, "image_size": cfg.image_size, "network_input": cfg.size,
             "embedding_dim": 256, "frames": len(records), **{f"{s}_frames": n for s, n in counts.items()},
             "test_identities": len(probe_test_ids), "probe_frames": len(probe_records),
             "training_test_identities": len(test_ids), "batch_1src": cfg.batch_1src, "batch_3src": cfg.batch_3src,
             "batch_baselines": cfg.ae_batch, "probe_batch": cfg.probe_batch}  # fmt: skip
    report = {
        "command": "fabnet demo"
        + (" --quick" if cfg.name == "quick" else "")
        + f" --out {out}"
        + (f" --data {keep_data}" if keep_data else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {_torch_version()}",
        "config": asdict(cfg),
        "seeds": {"data": cfg.seed, "training": cfg.seed, "probes": cfg.seed, "split": 0},
        "sizes": sizes,
        "data": {
            "root": os.path.relpath(data, out),
            "frames": len(records),
            **counts,
            "test_identities": len(test_ids),
            "reused": synth_info.get("reused", False),
            "probe_root": os.path.relpath(probe_data, out),
        },
        "steps": {
            "fabnet_1src": r1.step,
            "fabnet_3src_curriculum": r3.step,
            "autoencoder": cfg.ae_steps,
            "random_init": 0,
            **({"rotation": cfg.rotation_steps} if cfg.rotation_steps else {}),
            "pixels": 0,
            "noise": 0,
        },
        "best_val_l1": {"fabnet_1src": r1.best_val, "fabnet_3src_curriculum": r3.best_val},
        "zero_flow_val_l1": {
            k: curves[k]["zero_flow"] for k in ("fabnet_1src", "fabnet_3src_curriculum") if "zero_flow" in curves[k]
        },
        "checkpoints": checkpoints,
        "probes": probes,
        "retrieval": retrieval,
        "confidence": confidence,
        "target_swap": target_swap,
        "figures": figures,
        "times": wall,
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
    }
    write_report(report, out)
    # Paths in report.json relative to DIR, so the report stays valid when DIR is moved.
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    report["figures"] = {k: rel(v) for k, v in figures.items()}
    report["checkpoints"] = {k: rel(v) for k, v in checkpoints.items()}
    for r in list(retrieval.values()) + ([confidence] if confidence else []):
        r["png"] = rel(r["png"])
    dump_json(report, os.path.join(out, "report.json"))
    _log(f"done in {wall['total']:.0f} s: {os.path.join(out, 'report.md')}")
    print(format_table(probes))
    return report


def _torch_version() -> str:
    import torch

    return torch.__version__


__all__ = ["DemoConfig", "DemoInterrupted", "METHODS", "loss_figure", "probe_bar_chart", "run_demo", "write_report"]
