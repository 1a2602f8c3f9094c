"""The FAb-Net training loop: ``train(TrainConfig(...)) -> TrainResult``.

One step: a batch of (target, K sources) -> per-sample L1 from one fused ``warp_blend_l1`` call
-> the curriculum's window mean (or the plain mean) -> backward -> SGD. Every ``val_every`` steps
the validation L1 (whole batches, eval-mode BatchNorm) feeds the curriculum's plateau counter and,
once the curriculum has finished (or without one), ``ReduceLROnPlateau``.

Files under ``out``:
    config.json               the TrainConfig
    metrics.jsonl             one JSON object per logged train step ("kind": "train"), per
                              validation ("kind": "val"; step 0: before training, with the
                              zero-flow loss), and "init", "resume", "interrupt", "end"; rank 0 only
    checkpoints/last.pt       every ``checkpoint_every`` steps, at the end and on SIGINT/SIGTERM
    checkpoints/best.pt       the best validation loss
    figures/loss.png          loss curves with curriculum shifts marked
    figures/samples_XXXXXX.png  validation samples: target, sources, confidences, generated

Resuming (``resume=True``) restores model, optimiser, scheduler, curriculum, RNG states and the
data position (epoch and batches consumed of it: the loader's plan is a function of seed and
epoch, so the order continues exactly); a new --lr, --momentum or --weight-decay is applied and
logged in the "resume" record.

The run directory is locked while the run lasts (fabnet.train.run_dir): a second run on it is
refused, and a run already there is replaced only with ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import signal
import time

from fabnet.data.bad_frames import TooManyBadFrames
from fabnet.train import distributed as D
from fabnet.train.batches import epoch_batches, to_device
from fabnet.train.config import TrainConfig, TrainResult, check_config, check_data
from fabnet.train.metrics import read_metrics
from fabnet.train.run import Run
from fabnet.train.run_dir import owned
from fabnet.train.state import (
    NonFiniteError,
    Signals,
    check_finite,
    plateau_step,
)

__all__ = ["NonFiniteError", "TrainConfig", "TrainResult", "plateau_step", "read_metrics", "train"]


def train(config: TrainConfig) -> TrainResult:
    """Train FAb-Net as ``config`` says; returns where the checkpoint is and what was measured.

    Under torchrun (WORLD_SIZE > 1) every rank calls this: DistributedDataParallel, per-rank data
    shards, rank 0 writes files. See the module docstring for the files written.
    """
    cfg = dataclasses.replace(config)
    check_config(cfg)
    check_data(cfg)
    world = D.setup(cfg.device)
    try:
        with owned(cfg.out, world):
            run = Run(cfg, world)
            interrupted, why = _step_loop(run)
            return run.finish(interrupted, why)
    finally:
        D.teardown(world)


def _step_loop(run: Run) -> tuple[bool, str | None]:
    """Steps until ``cfg.steps`` (or a signal, or ``stop_after``): (interrupted, why)."""
    from tqdm import tqdm

    cfg, world = run.cfg, run.world
    bar = tqdm(
        total=run.total,
        initial=run.step,
        disable=not (cfg.progress and world.is_main),
        unit="step",
        dynamic_ncols=True,
        desc=f"train S={cfg.size} K={cfg.num_sources}",
    )
    run.set_train_mode()
    steps_here, samples, t_log = 0, 0, time.perf_counter()
    it = epoch_batches(run.train_loader, run.epoch, run.batch_in_epoch)
    try:
        with Signals() as signals:
            while run.step < run.total:
                try:
                    batch = next(it)
                except StopIteration:
                    run.epoch, run.batch_in_epoch = run.epoch + 1, 0
                    it = epoch_batches(run.train_loader, run.epoch, 0)
                    continue
                except Exception:
                    # Ctrl-C reaches the loader's worker processes too; when they die of it, the
                    # checkpoint of the steps done so far is still owed.
                    if signals.received is None:
                        raise
                    return True, signal.Signals(signals.received).name
                target, sources = to_device(batch, world.device)
                losses = run.ddp(target, sources)
                loss = run.curriculum.select(losses)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Before the update: a non-finite loss or gradient stops training with the model
                # (and every checkpoint on disk) as they were after the last finite step.
                check_finite(run.step + 1, losses, run.model, world, run.last_path, run.lr)
                run.updating = True  # a failure inside the update leaves the weights half-changed
                run.optimizer.step()
                run.updating = False
                run.step += 1
                run.batch_in_epoch += 1
                steps_here += 1
                samples += target.shape[0] * world.size
                bar.update(1)
                if run.step % cfg.log_every == 0 or run.step == run.total:
                    now = time.perf_counter()
                    run.log_train(loss, losses, samples / max(now - t_log, 1e-9), bar)
                    samples, t_log = 0, now
                if run.step % cfg.val_every == 0 or run.step == run.total:
                    run.validation_round(bar)
                if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
                    run.checkpoint(run.last_path)
                stop = signals.received is not None or (cfg.stop_after is not None and steps_here >= cfg.stop_after)
                if D.any_rank(world, stop):
                    why = signal.Signals(signals.received).name if signals.received is not None else "stop_after"
                    return True, why
        return False, None
    except TooManyBadFrames as err:
        # The data root changed under the run: keep what was learned, then stop.
        run.checkpoint(run.last_path)
        raise TooManyBadFrames(
            f"step {run.step}: {err}; checkpoint {run.last_path!r} written: fix or re-index the "
            "data, then continue with --resume"
        ) from None
    except Exception as err:
        failure = run.resource_failure(err)
        if failure is None:
            raise
        raise failure from None
    finally:
        bar.close()
