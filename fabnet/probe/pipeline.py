"""Checkpoint -> embeddings of the splits -> probes -> test metrics, and retrieval figures.

The functions here are what ``fabnet embed / probe / retrieve`` and the demo run; each split
is embedded once and reused by every task.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass

import numpy as np

from fabnet.probe.linear import ProbeConfig, fit_probe
from fabnet.probe.tasks import KIND, MAIN_METRIC, TASKS, evaluate, task_targets


@dataclass
class Embedded:
    """One split through one encoder: records, embeddings (N, D) and crop boxes (N, 4)."""

    split: str
    records: list
    embeddings: np.ndarray
    boxes: np.ndarray

    @property
    def identities(self) -> np.ndarray:
        return np.array([r.identity for r in self.records])

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.records]


def embed_splits(
    checkpoint,
    root: str,
    splits=("train", "val", "test"),
    *,
    crop="center",
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, Embedded]:
    """Embed the frames of each split of ``root`` with a frozen encoder.

    checkpoint: the path of a FAb-Net or baseline checkpoint, or an encoder module with a
    ``size`` attribute (e.g. ``fabnet.probe.pixels.PixelEncoder``).
    """
    import torch

    from fabnet.data.index import load_index
    from fabnet.probe.frames import embed_records, load_encoder

    encoder = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_encoder(checkpoint)
    records = load_index(root)
    out = {}
    for split in splits:
        recs = records if split in (None, "all") else [r for r in records if r.split == split]
        if not recs:
            raise ValueError(
                f"split {split!r} of {root!r} has no frames; the probes need train, val and test "
                "identities (make a data set with at least 3 identities, e.g. `fabnet synth`)"
            )
        emb, boxes, kept = embed_records(encoder, recs, crop=crop, batch_size=batch_size, progress=progress)
        out[split or "all"] = Embedded(split or "all", [recs[i] for i in kept], emb, boxes)
    return out


def save_embeddings(
    emb: dict[str, Embedded], path: str, checkpoint: str | None = None, provenance: dict | None = None
) -> str:
    """``torch.save`` {"splits": {split: {"embeddings": (N, D) tensor, "paths", "relpaths", "identities",
    "splits" (each frame's own), "boxes"}}, "checkpoint", "provenance"} (fabnet.probe.embedding_files)."""
    import torch

    blob = {"format": "fabnet-embeddings/2", "checkpoint": checkpoint, "provenance": provenance, "splits": {}}
    for split, e in emb.items():
        blob["splits"][split] = {
            "embeddings": torch.from_numpy(np.ascontiguousarray(e.embeddings)),
            "paths": e.paths,
            "relpaths": [r.relpath for r in e.records],
            "identities": [r.identity for r in e.records],
            "splits": [r.split or split for r in e.records],
            "boxes": torch.from_numpy(e.boxes),
        }
    torch.save(blob, path)
    return path


@dataclass
class ProbeOutcome:
    """A fitted probe's test predictions and what scoring them needs.

    pred: (N, k) predictions on the test frames with a label; y: their targets; identities: (N,)
    each frame's identity (the bootstrap's unit); options: ``evaluate``'s keyword arguments.
    """

    task: str
    pred: np.ndarray
    y: np.ndarray
    identities: np.ndarray
    options: dict
    fit: object
    num_train: int
    num_val: int

    def score(self, rows=None) -> dict[str, float]:
        """``evaluate`` on the test rows ``rows`` (all of them by default; repeats allowed)."""
        if rows is None:
            return evaluate(self.task, self.pred, self.y, **self.options)
        return evaluate(self.task, self.pred[rows], self.y[rows], **self.options)


# Tasks whose labels change within an identity: the within-identity probes' tasks (attributes
# are drawn once per identity in the synthetic data, so centring them leaves nothing).
WITHIN_IDENTITY_TASKS = ("landmarks", "pose", "expression")


def identity_means(values: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """(N, ...) each row's identity mean of ``values`` (N, ...) over the rows of that identity."""
    values = np.asarray(values, np.float64)
    _, group = np.unique(identities, return_inverse=True)
    sums = np.zeros((group.max() + 1,) + values.shape[1:])
    np.add.at(sums, group, values)
    counts = np.bincount(group).reshape((-1,) + (1,) * (values.ndim - 1))
    return (sums / counts)[group]


def probe_outcome(
    task: str,
    emb: dict[str, Embedded],
    *,
    config: ProbeConfig | None = None,
    info: dict | None = None,
    within_identity: bool = False,
) -> ProbeOutcome:
    """Fit the probe of ``task`` on train (early stopping on val) and predict the test frames.

    within_identity: centre the embeddings per identity (each identity's mean over its frames in
    the split taken away), and regression targets too: the probe then reads how a face changes
    between its own frames, not how faces differ. The test predictions get each test identity's
    mean target back, so the metrics stay in the absolute units (an encoder that only knows
    who is shown scores as well as predicting each identity's mean). Classes are not centred.
    """
    from fabnet.data.labels import OUTER_EYE_CORNERS

    if within_identity and task not in WITHIN_IDENTITY_TASKS:
        raise ValueError(f"within_identity probes are for {WITHIN_IDENTITY_TASKS}; got task {task!r}")
    info = info or {}
    data, offset = {}, None
    for split in ("train", "val", "test"):
        e = emb[split]
        t = task_targets(task, e.records, e.boxes)
        x, y, ids = e.embeddings[t.keep], t.y, e.identities[t.keep]
        if within_identity:
            x = (x - identity_means(x, ids)).astype(np.float32)
            if KIND[task] == "regression":
                mean_y = identity_means(y, ids)
                y = y - mean_y
                if split == "test":
                    offset = mean_y
        data[split] = (x, y)
        if split == "test":
            identities = ids
    if min(len(data[s][1]) for s in data) == 0:
        counts = {s: len(data[s][1]) for s in data}
        raise ValueError(
            f"task {task!r}: no labelled frames in some split {counts}; the data root needs the "
            f"{task} columns of labels.csv filled for train, val and test"
        )
    num_outputs = None
    if task == "expression":  # every named class gets an output, seen in train or not
        num_outputs = max(len(info.get("expression_names", [])), int(max(d[1].max() for d in data.values())) + 1)
    fit = fit_probe(KIND[task], *data["train"], *data["val"], config=config, num_outputs=num_outputs)
    pred = fit.predict(data["test"][0])
    y_test = data["test"][1]
    if offset is not None:  # back to absolute units (the docstring)
        pred, y_test = pred + offset, y_test + offset
    names = None
    if task == "expression":
        names = list(info.get("expression_names", []))[: pred.shape[1]] or None
    elif task == "attributes":
        names = list(info.get("attribute_names", []))[: pred.shape[1]] or None
    options = dict(
        pose_names=info.get("pose_names", ("yaw", "pitch", "roll")),
        class_names=names,
        outer_eye_corners=OUTER_EYE_CORNERS,
    )
    return ProbeOutcome(
        task, pred, y_test, np.asarray(identities), options, fit, len(data["train"][1]), len(data["val"][1])
    )


def probe_task(
    task: str,
    emb: dict[str, Embedded],
    *,
    config: ProbeConfig | None = None,
    info: dict | None = None,
    bootstrap: int = 1000,
    within_identity: bool = False,
) -> tuple[dict, object]:
    """Fit the probe of ``task`` on train (early stopping on val) and score it on test.

    emb: the output of ``embed_splits`` with train, val and test. info: label names
    (``fabnet.data.labels.label_info``). bootstrap: identity resamples of the test split for
    ``ci95`` (0: none). Returns (metrics, fitted probe); metrics also hold ``ci95`` ({main
    metric: [low, high]}, fabnet.probe.intervals), the number of test identities, the train /
    val sizes, the stopping epoch and the fit time. within_identity: see ``probe_outcome``.
    """
    t0 = time.perf_counter()
    outcome = probe_outcome(task, emb, config=config, info=info, within_identity=within_identity)
    metrics = outcome.score()
    main = MAIN_METRIC[task]
    metrics["test_identities"] = int(len(np.unique(outcome.identities)))
    if bootstrap:
        from fabnet.probe.intervals import identity_bootstrap

        def metric(rows):
            return outcome.score(rows)[main]

        metrics["ci95"] = {main: identity_bootstrap(metric, outcome.identities, resamples=bootstrap, seed=0)}
    fit = outcome.fit
    metrics.update(
        num_train=outcome.num_train,
        num_val=outcome.num_val,
        best_epoch=fit.best_epoch,
        epochs=fit.epochs,
        fit_s=round(time.perf_counter() - t0, 2),
    )
    return metrics, fit


def format_table(results: dict[str, dict[str, dict]], tasks=TASKS) -> str:
    """A Markdown table of the main metric per task (rows: methods), with its 95 % interval
    over test identities in brackets where the metrics carry one (``ci95``)."""
    methods = []
    for task in tasks:
        for m in results.get(task, {}):
            if m not in methods:
                methods.append(m)
    head = "| method | " + " | ".join(f"{t} {MAIN_METRIC[t]}" for t in tasks if t in results) + " |"
    lines = [head, "|" + "---|" * (1 + sum(t in results for t in tasks))]
    for m in methods:
        cells = []
        for t in tasks:
            if t in results:
                metrics = results[t].get(m, {})
                v = metrics.get(MAIN_METRIC[t])
                fmt = ".3f" if "auc" in MAIN_METRIC[t] else ".2f"
                ci = metrics.get("ci95", {}).get(MAIN_METRIC[t])
                cell = "-" if v is None else f"{v:{fmt}}"
                if v is not None and ci is not None:
                    cell += f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"
                cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pose(emb: Embedded) -> np.ndarray:
    return np.stack([np.asarray(r.pose, np.float64) for r in emb.records])


def pose_agreement(emb: Embedded, *, queries: int | None = None, k: int = 6, seed: int = 0) -> dict:
    """How close in pose the cross-identity neighbours are, against random other-identity frames.

    For ``queries`` frames of ``emb`` (all by default): mean |yaw, pitch, roll| difference (deg)
    to their top-k cosine neighbours of other identities, and to k random frames of other
    identities. Empty when the records carry no pose.
    """
    from fabnet.probe.retrieval import cosine_neighbours, pick_queries

    pose = _pose(emb)
    if np.isnan(pose).all():
        return {}
    ids = emb.identities
    q = pick_queries(ids, queries or len(ids), seed)
    nn_idx, _ = cosine_neighbours(emb.embeddings[q], emb.embeddings, ids[q], ids, k)
    valid = nn_idx >= 0
    if not valid.any():
        return {}
    diff = np.abs(pose[q][:, None, :] - pose[np.where(valid, nn_idx, 0)])[valid]
    rng = np.random.default_rng(seed + 1)
    rand = []
    for qi in q:
        others = np.flatnonzero(ids != ids[qi])
        rand.append(np.abs(pose[rng.choice(others, min(k, len(others)), replace=False)] - pose[qi]))
    rand = np.concatenate(rand)
    return {
        "neighbour_pose_diff_deg": [round(float(v), 2) for v in np.nanmean(diff, axis=0)],
        "random_pose_diff_deg": [round(float(v), 2) for v in np.nanmean(rand, axis=0)],
        "pose_stats_queries": int(len(q)),
    }


def retrieval_figure(
    emb: Embedded,
    out_png: str,
    *,
    queries: int = 6,
    k: int = 6,
    seed: int = 0,
    title: str | None = None,
    stats_queries: int | None = None,
) -> dict:
    """Draw the cross-identity nearest neighbours of ``queries`` random frames of ``emb``.

    Every tile is captioned with its yaw / pitch / roll. Returns a summary: the query and
    neighbour paths, ``pose_agreement`` over ``stats_queries`` frames (default: all), the
    ``identity_share`` of the embedding variance of ``emb`` and, where the records carry poses,
    the ``within_track_pose_r2``: how much of the frame-to-frame variance the pose explains.
    """
    from fabnet.probe.retrieval import cosine_neighbours, draw_grid, identity_share, pick_queries, within_track_pose_r2

    ids = emb.identities
    q = pick_queries(ids, queries, seed)
    # Columns beyond the candidates would be blank tiles (k = 100000 asked for a 22 GB image).
    candidates = max((int((ids != ids[i]).sum()) for i in q), default=0)
    if k > candidates:
        warnings.warn(
            f"k={k} is more than the {candidates} frames of other identities; drawing {candidates}", stacklevel=2
        )
        k = max(candidates, 1)
    nn_idx, _ = cosine_neighbours(emb.embeddings[q], emb.embeddings, ids[q], ids, k)
    pose = _pose(emb)

    def caption(row: int) -> str:
        y, p, r = pose[row]
        return "" if np.isnan(y) else f"y{y:+.0f} p{p:+.0f} r{r:+.0f}"

    draw_grid(emb.paths, q, nn_idx, out_png, captions=caption, title=title)
    summary = {
        "png": out_png,
        "queries": [emb.records[i].relpath for i in q],
        "neighbours": [[emb.records[j].relpath for j in row if j >= 0] for row in nn_idx],
    }
    summary.update(pose_agreement(emb, queries=stats_queries, k=k, seed=seed))
    summary["identity_share"] = round(identity_share(emb.embeddings, ids), 4)
    tracks = np.array(["/".join(r.track_key) for r in emb.records])
    if not np.isnan(pose).all():
        summary["within_track_pose_r2"] = round(within_track_pose_r2(emb.embeddings, tracks, pose), 4)
    return summary


def dump_json(obj, path: str) -> str:
    def default(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, default=default, allow_nan=True)
    return path


__all__ = [
    "WITHIN_IDENTITY_TASKS",
    "Embedded",
    "ProbeOutcome",
    "dump_json",
    "embed_splits",
    "format_table",
    "identity_means",
    "pose_agreement",
    "probe_outcome",
    "probe_task",
    "retrieval_figure",
    "save_embeddings",
]
