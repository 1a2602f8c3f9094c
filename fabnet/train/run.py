"""One training run's state: model, optimiser, schedule, loaders, log and counters, set up (or
restored from ``--resume``) on construction; the step loop (fabnet.train.loop) reads and
advances them, and asks it to validate, checkpoint, draw and finish."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time

import numpy as np
import torch

from fabnet import __version__
from fabnet.model import FabNet, init_from, load_checkpoint, save_checkpoint
from fabnet.model.checkpoint import FORMAT
from fabnet.model.fabnet import PAPER_CONFIDENCE_RANGE
from fabnet.train import distributed as D
from fabnet.train.batches import epoch_batches, make_loader, to_device
from fabnet.train.config import TrainConfig, TrainResult
from fabnet.train.curriculum import Curriculum
from fabnet.train.metrics import MetricsLog
from fabnet.train.run_dir import check_existing_run, clear_run
from fabnet.train.state import (
    NonFiniteError,
    ResourceError,
    changed_optimisation,
    check_resume,
    first_line,
    non_finite_parameters,
    optimizer_state_misfit,
    plateau_step,
    resource_failure,
    rng_state,
    set_rng_state,
)
from fabnet.train.tensorboard import TensorBoardLog
from fabnet.train.validation import validate


class Run:
    """One training run: its model, optimiser, schedule, loaders, log and counters, set up (or
    restored from ``--resume``) on construction; the step loop reads and advances them."""

    def __init__(self, cfg: TrainConfig, world: D.World):
        self.cfg, self.world = cfg, world
        self.dir = os.path.abspath(cfg.out)
        checkpoints = os.path.join(self.dir, "checkpoints")
        self.last_path = os.path.join(checkpoints, "last.pt")
        self.best_path = os.path.join(checkpoints, "best.pt")
        self.updating, self.changed = False, {}
        resume_state = self._resume_state()
        resume_step = resume_state["step"] if resume_state is not None else None
        resume_path = (cfg.resume if isinstance(cfg.resume, str) else self.last_path) if cfg.resume else None
        check_existing_run(self.dir, resume_path=resume_path, overwrite=cfg.overwrite, resume_step=resume_step)
        if cfg.overwrite and resume_state is None and world.is_main:
            clear_run(self.dir)

        torch.manual_seed(cfg.seed + world.rank)
        np.random.seed(cfg.seed + world.rank)
        random.seed(cfg.seed + world.rank)
        # A resumed run keeps its checkpoint's logit bound (older files: the paper's).
        confidence_range = (
            resume_state["model_config"].get("confidence_range", PAPER_CONFIDENCE_RANGE)
            if resume_state is not None
            else cfg.confidence_range
        )
        self.model = FabNet(
            cfg.size,
            cfg.num_sources,
            width=cfg.width,
            op_backend=cfg.op_backend,
            channels_last=cfg.channels_last,
            autocast_bf16=cfg.bf16,
            confidence_range=confidence_range,
            identity_init=cfg.identity_init,
        )
        init_loaded = []
        if cfg.init is not None and resume_state is None:
            init_loaded = init_from(self.model, load_checkpoint(cfg.init, "cpu"), path=cfg.init)
        if cfg.freeze_flow_decoder:
            self.model.flow_decoder.requires_grad_(False)
        self.model.to(world.device)
        self._optimisation()

        self.step, self.epoch, self.batch_in_epoch, self.best_val = 0, 0, 0, math.inf
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp = self.model
        if world.distributed:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[world.device.index] if world.device.type == "cuda" else None
            )
        batch_size = cfg.resolved_batch_size()
        self.train_loader = make_loader(cfg, "train", world, batch_size)
        self.val_loader = make_loader(cfg, "val", world, batch_size)
        per_epoch = len(self.train_loader)
        if per_epoch < 1:
            raise ValueError(
                f"--batch-size {batch_size} is larger than the training shard of --data {cfg.data!r}; "
                "lower --batch-size or raise --epoch-length"
            )
        self.total = cfg.steps if cfg.steps is not None else (cfg.epochs * per_epoch if cfg.epochs else 1000)
        self._prepare_files(checkpoints)
        resume_step = self.step if resume_state is not None else None
        self.tensorboard = TensorBoardLog(self.dir, world.is_main and cfg.tensorboard, resume_step)
        self.metrics = MetricsLog(
            os.path.join(self.dir, "metrics.jsonl"), world.is_main, resume_step, on_record=self.tensorboard.record
        )
        self._log_start(init_loaded, resume_state)
        if cfg.val_at_start and resume_state is None and self.step == 0:
            self._initial_validation()

    # -- set-up ---------------------------------------------------------------------------------

    def _resume_state(self) -> dict | None:
        cfg = self.cfg
        if not cfg.resume:
            return None
        path = cfg.resume if isinstance(cfg.resume, str) else self.last_path
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"--resume: no checkpoint at {path!r} (is --out {cfg.out!r} the run to "
                "continue? drop --resume to start a new run)"
            )
        state = load_checkpoint(path, "cpu")
        check_resume(cfg, state, path, self.world.size)
        return state

    def _optimisation(self) -> None:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.patience - 1, threshold=1e-3
        )
        self.curriculum = Curriculum(cfg.curriculum, cfg.patience)

    def _restore(self, state: dict) -> None:
        path = self.cfg.resume if isinstance(self.cfg.resume, str) else self.last_path
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}
        for key, target in {**parts, "curriculum": self.curriculum}.items():
            try:
                target.load_state_dict(state[key])
            except Exception as err:  # a file edited, corrupted or from another version
                raise ValueError(
                    f"--resume {path!r}: its {key} state does not fit this run ({first_line(err)})"
                ) from None
        misfit = optimizer_state_misfit(self.optimizer)
        if misfit:
            raise ValueError(f"--resume {path!r}: its optimizer state does not fit the model ({misfit})")
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.best_val = state.get("best_val", math.inf)
        if state.get("world_size", 1) == self.world.size:
            try:
                set_rng_state(state["rng"])
            except Exception as err:
                raise ValueError(
                    f"--resume {path!r}: its random-generator state is malformed ({first_line(err)})"
                ) from None
        # Options set anew on the command line apply from here on (the plateau schedule keeps
        # scaling from the new learning rate).
        self.changed = changed_optimisation(self.cfg, state.get("train_config") or {})
        for group in self.optimizer.param_groups:
            for name, (_, new) in self.changed.items():
                if name in group:
                    group[name] = new

    def _prepare_files(self, checkpoints: str) -> None:
        if not self.world.is_main:
            return
        # temporaries of checkpoint writes cut short by SIGKILL (never renamed, never read)
        if os.path.isdir(checkpoints):
            for name in os.listdir(checkpoints):
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(checkpoints, name))
        os.makedirs(os.path.join(self.dir, "figures"), exist_ok=True)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump({**dataclasses.asdict(self.cfg), "fabnet_version": __version__}, f, indent=2)

    def _log_start(self, init_loaded: list[str], resume_state: dict | None) -> None:
        cfg = self.cfg
        if self.world.is_main and init_loaded:
            frozen = ["flow_decoder"] if cfg.freeze_flow_decoder else []
            self.metrics.log(dict(kind="init", step=self.step, path=cfg.init, loaded=init_loaded, frozen=frozen))
        if resume_state is not None:
            # What the run continues from, as restored: a resumed run can be checked against it.
            self.metrics.log(
                dict(
                    kind="resume",
                    step=self.step,
                    epoch=self.epoch,
                    batch_in_epoch=self.batch_in_epoch,
                    curriculum=self.curriculum.state_dict(),
                    lr=self.lr,
                    best_val=self.best_val,
                    rng_restored=resume_state.get("world_size", 1) == self.world.size,
                    changed=self.changed,
                )
            )

    def _initial_validation(self) -> None:
        # The starting point of the validation curve. It feeds neither the curriculum nor the LR
        # schedule: a plateau is a property of training, and there has been none yet.
        val0, zero_flow = self.validate(zero_flow=True)
        self.metrics.log(
            dict(
                kind="val",
                step=0,
                epoch=0,
                val_loss=val0,
                zero_flow_loss=zero_flow,
                best=self.best_val,
                initial=True,
                window=list(self.curriculum.window),
                bad_rounds=0,
                improved=False,
                plateau=False,
                shifted=False,
                lr=self.lr,
                lr_reduced=False,
            )
        )

    # -- during training ------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_flow_decoder:
            self.model.flow_decoder.eval()  # frozen means its BatchNorm statistics too

    def validate(self, zero_flow: bool = False):
        result = validate(
            self.model,
            self.val_loader,
            batches=self.cfg.val_batches,
            world=self.world,
            op_backend=self.cfg.op_backend,
            zero_flow=zero_flow,
        )
        self.set_train_mode()
        return result

    def log_train(self, loss: torch.Tensor, losses: torch.Tensor, rate: float, bar) -> None:
        l_win, l_all = D.all_mean(self.world, [float(loss.detach()), float(losses.detach().mean())])
        lo, hi = self.curriculum.window
        self.metrics.log(
            dict(
                kind="train",
                step=self.step,
                epoch=self.epoch,
                loss=l_win,
                loss_batch=l_all,
                window=[lo, hi],
                lr=self.lr,
                samples_per_s=rate,
                time=time.time(),
            )
        )
        bar.set_postfix(
            loss=f"{l_win:.4f}", batch=f"{l_all:.4f}", window=f"{lo:.1f}-{hi:.1f}", rate=f"{rate:.1f}/s", refresh=False
        )

    def validation_round(self, bar) -> None:
        """Validate, step the curriculum / LR schedule, log, keep the best checkpoint, figures."""
        cfg = self.cfg
        val = self.validate()
        info = plateau_step(self.curriculum, self.scheduler, self.optimizer, val, self.step)
        improved_best = val < self.best_val
        self.best_val = min(self.best_val, val)
        self.metrics.log(dict(kind="val", step=self.step, epoch=self.epoch, val_loss=val, best=self.best_val, **info))
        if self.world.is_main:
            shift = f" shift -> {info['window']}" if info["shifted"] else ""
            lr = f", lr -> {info['lr']:.2g}" if info["lr_reduced"] else ""
            bar.write(
                f"step {self.step}: val L1 {val:.4f} (best {self.best_val:.4f}), plateau rounds "
                f"{info['bad_rounds']}/{cfg.patience}, window {info['window']}{shift}{lr}"
            )
        if improved_best:
            self.checkpoint(self.best_path)
        if cfg.figure_every and self.step % cfg.figure_every == 0 and self.step != self.total:
            self.figures(f"{self.step:06d}")

    def resource_failure(self, err: BaseException) -> ResourceError | None:
        """One ResourceError for a loader worker that died or memory that ran out (None for
        anything else); the steps done are saved first when the weights are whole."""
        return resource_failure(self, err)

    def checkpoint(self, path: str) -> None:
        if not self.world.is_main:
            return
        bad = non_finite_parameters(self.model)
        if bad:  # the finite-gradient check makes this unreachable but for an update that overflows
            raise NonFiniteError(
                f"step {self.step}: {len(bad)} parameter tensors are not finite "
                f"({', '.join(bad[:3])}, ...); {path!r} was not overwritten; lower --lr (now "
                f"{self.lr:g})"
            )
        save_checkpoint(
            dict(
                format=FORMAT,
                fabnet_version=__version__,
                model_config=self.model.config(),
                model=self.model.state_dict(),
                step=self.step,
                epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                curriculum=self.curriculum.state_dict(),
                rng=rng_state(),
                world_size=self.world.size,
                train_config=dataclasses.asdict(self.cfg),
                best_val=self.best_val,
                time=time.time(),
            ),
            path,
        )

    def figures(self, tag: str) -> None:
        from fabnet.train.figures import loss_curves, sample_figure

        cfg = self.cfg
        if not (self.world.is_main and cfg.figures):
            return
        loss_curves(
            self.metrics.records,
            os.path.join(self.dir, "figures", "loss.png"),
            title=f"FAb-Net S={cfg.size} K={cfg.num_sources}",
        )
        target, sources = to_device(next(epoch_batches(self.val_loader, 0, 0)), self.world.device)
        shown = sample_figure(
            self.model,
            target,
            sources,
            cfg.figure_samples,
            os.path.join(self.dir, "figures", f"samples_{tag}.png"),
            title=f"step {self.step}, window {self.curriculum.window}",
        )
        self.tensorboard.panel(self.step, shown["target"], shown["sources"], shown["generated"])
        self.set_train_mode()

    # -- the end --------------------------------------------------------------------------------

    def finish(self, interrupted: bool, why: str | None) -> TrainResult:
        world = self.world
        self.checkpoint(self.last_path)
        if world.is_main:
            if interrupted:
                self.metrics.log(
                    dict(kind="interrupt", step=self.step, epoch=self.epoch, reason=why, checkpoint=self.last_path)
                )
            self.figures("final" if not interrupted else f"{self.step:06d}")
        checksums = D.parameter_checksums(self.model, world)
        self.metrics.log(
            dict(
                kind="end",
                step=self.step,
                epoch=self.epoch,
                best_val=self.best_val,
                interrupted=interrupted,
                world_size=world.size,
                checksums=checksums,
            )
        )
        self.tensorboard.close()
        D.barrier(world)
        return TrainResult(
            checkpoint=self.last_path,
            best_val=self.best_val,
            metrics=self.metrics.records,
            step=self.step,
            epoch=self.epoch,
            interrupted=interrupted,
            stop_reason=why,
            run_dir=self.dir,
            best_checkpoint=self.best_path if os.path.exists(self.best_path) else None,
            checksums=checksums,
        )


__all__ = ["Run"]
