"""The demo's and the study's building blocks that leave files behind: the synthetic data and
probe set, FAb-Net training stages and baselines. Each is reused when an earlier run left the
same thing in the same place, so a run stopped by Ctrl-C continues where it stopped."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import asdict

from fabnet.data.synth import GENERATOR
from fabnet.demo.config import PROBE_SEED_OFFSET, PROBE_SPLIT


def log(msg: str, tag: str = "demo") -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages: the machine may be shared, and timings depend on it."""
    return [round(v, 2) for v in os.getloadavg()]


def provenance(load_start: list[float]) -> dict:
    """A report's date, machine and load averages (``load_start`` taken when the run began)."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "load_average": {"start": load_start, "end": load_average()},
    }


def _made_with(root: str, stamp: str, want: dict) -> bool:
    """Whether ``root`` holds a data root whose ``stamp`` file records ``want`` (compared as
    JSON, so tuples match the lists they were written as)."""
    path = os.path.join(root, stamp)
    if not (os.path.exists(path) and os.path.exists(os.path.join(root, "labels.csv"))):
        return False
    with open(path) as fh:
        return json.load(fh) == json.loads(json.dumps(want))


RUN_STAMP = "demo_run.json"  # a FAb-Net stage's settings, beside its metrics.jsonl


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _read_stamp(root: str):
    """The synthetic data's stamp (what it was made with), or None for data made elsewhere."""
    return _read_json(os.path.join(root, "demo_data.json"))


def _stamp(root: str, stamp: str, want: dict) -> None:
    with open(os.path.join(root, stamp), "w") as fh:
        json.dump(want, fh)


def synth_training_data(cfg, root: str, workers: int, progress: bool = False) -> dict:
    from fabnet.data.synth import synthesize

    keys = ("identities", "tracks_per_identity", "frames_per_track", "image_size", "seed", "light")
    want = {k: getattr(cfg, k) for k in keys}
    want["generator"] = GENERATOR
    if _made_with(root, "demo_data.json", want):
        log(f"reusing the synthetic data in {root}")
        return {"reused": True}
    t0 = time.perf_counter()
    synthesize(
        root,
        cfg.identities,
        cfg.tracks_per_identity,
        cfg.frames_per_track,
        size=cfg.image_size,
        seed=cfg.seed,
        workers=workers,
        progress=progress,
        light=cfg.light,
    )
    _stamp(root, "demo_data.json", want)
    return {"reused": False, "wall_s": round(time.perf_counter() - t0, 1)}


def synth_probe_set(cfg, root: str, workers: int, progress: bool = False) -> dict:
    """The labelled probe set: ``probe_identities`` people unseen in training, one track of
    ``probe_frames`` frames each, with the split written into labels.csv (PROBE_SPLIT)."""
    from fabnet.data.labels import write_labels
    from fabnet.data.synth import identity_name, synthesize

    want = {
        "identities": cfg.probe_identities,
        "frames": cfg.probe_frames,
        "image_size": cfg.image_size,
        "seed": cfg.seed + PROBE_SEED_OFFSET,
        "split": PROBE_SPLIT,
        "light": cfg.light,
        "generator": GENERATOR,
    }
    if _made_with(root, "demo_probe_data.json", want):
        log(f"reusing the probe set in {root}")
        return {"reused": True}
    t0 = time.perf_counter()
    records = synthesize(
        root,
        cfg.probe_identities,
        1,
        cfg.probe_frames,
        size=cfg.image_size,
        seed=cfg.seed + PROBE_SEED_OFFSET,
        workers=workers,
        progress=progress,
        previews=False,
        light=cfg.light,
    )
    n_fit = round(PROBE_SPLIT[0] * cfg.probe_identities)
    n_val = max(1, round(PROBE_SPLIT[1] * cfg.probe_identities))
    split_of = {
        identity_name(i): "train" if i < n_fit else "val" if i < n_fit + n_val else "test"
        for i in range(cfg.probe_identities)
    }
    for r in records:
        r.split = split_of[r.identity]
    write_labels(root, records)
    _stamp(root, "demo_probe_data.json", want)
    return {"reused": False, "wall_s": round(time.perf_counter() - t0, 1)}


class DemoInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the demo during ``stage``; what was trained is on disk."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


def finished_run(run: str, steps: int):
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
    return TrainResult(
        checkpoint=last,
        best_val=ends[-1].get("best_val", math.inf),
        metrics=records,
        step=steps,
        epoch=ends[-1].get("epoch", 0),
        run_dir=run,
        best_checkpoint=best if os.path.exists(best) else None,
    )


def _made_otherwise(run: str, want: dict) -> bool:
    """Whether ``run`` holds a run made with other settings than ``want`` (or of unknown ones),
    said in one line: such a run is trained afresh, never continued."""
    made = _read_json(os.path.join(run, RUN_STAMP))
    if made is not None and made != json.loads(json.dumps(want)):
        changed = sorted(k for k in set(made) | set(want) if made.get(k) != want.get(k))
        log(f"{run} holds a run made with other settings ({', '.join(changed)}): training it afresh")
        return True
    if made is None and os.path.exists(os.path.join(run, "metrics.jsonl")):
        log(f"{run} holds a run of unknown settings: training it afresh")
        return True
    return False


def train_fabnet(
    cfg,
    data: str,
    run: str,
    *,
    num_sources: int,
    steps: int,
    batch: int,
    curriculum: bool,
    init: str | None,
    patience: int,
    progress: bool,
):
    """Train one FAb-Net stage; a stage finished earlier in ``run`` is reused, one interrupted is
    resumed. KeyboardInterrupt when a signal stops it (its checkpoint is saved)."""
    from fabnet.train import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = dict(
        data=data,
        out=run,
        size=cfg.size,
        num_sources=num_sources,
        batch_size=batch,
        steps=steps,
        curriculum=curriculum,
        patience=patience,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        init=init,
        # The release freezes the flow decoder in the K-source stage; here it keeps
        # learning, so stage 2 can improve the warp it blends.
        freeze_flow_decoder=False,
        seed=cfg.seed,
        val_every=cfg.val_every,
        val_batches=cfg.val_batches,
        checkpoint_every=0,
        log_every=5,
        figure_every=0,
        figure_samples=4,
        device=cfg.device,
        data_backend="pil",
        # On a CPU the loader's workers would take cores from the convolutions; a GPU needs them.
        num_workers=0 if cfg.device == "cpu" else 4,
        progress=progress,
    )
    # What makes this run this run: its options and the data it reads (a regenerated data root
    # means a new run). A run in ``run`` made otherwise is never continued or reused.
    want = {k: v for k, v in kwargs.items() if k not in ("out", "progress")}
    # Paths as absolute ones: a run reused from disk names its checkpoint relative to --out.
    want.update(data=os.path.abspath(data), init=os.path.abspath(init) if init is not None else None)
    want["data_stamp"] = _read_stamp(data)
    if init is not None:  # a retrained first stage means a new second stage
        st = os.stat(init)
        want["init_file"] = [st.st_size, st.st_mtime_ns]
    overwrite = _made_otherwise(run, want)
    if not overwrite:
        done = finished_run(run, steps)
        if done is not None:
            log(f"reusing the finished run in {run}")
            return done
    resume = not overwrite and os.path.exists(os.path.join(run, "checkpoints", "last.pt"))
    if resume:
        log(f"resuming the interrupted run in {run}")
    elif not overwrite and os.path.isdir(run) and os.listdir(run):
        # Made with these options and data, but killed (SIGKILL, a machine restart) before its
        # first checkpoint: there is nothing to continue, and train() would refuse the folder.
        log(f"restarting the run in {run}, stopped before its first checkpoint")
        overwrite = True
    kwargs.update(resume=resume, overwrite=overwrite)
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, RUN_STAMP), "w") as fh:
        json.dump(want, fh)
    result = train(TrainConfig(**{k: v for k, v in kwargs.items() if k in fields}))
    if result.interrupted:  # the signal was taken by train(), which saved a checkpoint first
        raise KeyboardInterrupt
    return result


def baseline(bcfg, train_records, path: str, images, progress: bool):
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
            log(f"reusing {path}")
            return BaselineResult(path, list(state.get("losses", [])), 0.0, asdict(bcfg))
    return train_baseline(bcfg, train_records, path, images=images, progress=progress)


__all__ = [
    "DemoInterrupted",
    "baseline",
    "finished_run",
    "load_average",
    "log",
    "provenance",
    "synth_probe_set",
    "synth_training_data",
    "train_fabnet",
]
