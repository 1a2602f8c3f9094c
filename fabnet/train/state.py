"""The state of a run between steps: resuming it, its random streams, the signals that stop it
cleanly, and the guard that stops it at the first non-finite step."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import warnings

import numpy as np
import torch

from fabnet.model import check_compatible
from fabnet.train import distributed as D
from fabnet.train.config import TrainConfig
from fabnet.train.curriculum import Curriculum


def check_resume(cfg: TrainConfig, state: dict, path: str, world_size: int) -> None:
    """ValueError when a checkpoint cannot continue this configuration; warnings when the data
    position or the random streams cannot be continued exactly."""

    check_compatible(state, size=cfg.size, num_sources=cfg.num_sources, width=cfg.width, path=path, arg="--resume")
    for key in ("optimizer", "scheduler", "curriculum", "step", "epoch", "batch_in_epoch"):
        if key not in state:
            raise ValueError(
                f"--resume {path!r} holds weights only (no {key!r}); start a new run from it with --init {path}"
            )
    for key in ("step", "epoch", "batch_in_epoch"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"--resume {path!r}: its {key!r} must be an integer >= 0, got {value!r}")
    world = state.get("world_size", 1)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"--resume {path!r}: its 'world_size' must be an integer >= 1, got {world!r}")
    old = state.get("train_config") or {}
    if not isinstance(old, dict):
        raise ValueError(f"--resume {path!r}: its 'train_config' must be a dict, got {type(old).__name__}")
    if "curriculum" in old and bool(old["curriculum"]) != bool(cfg.curriculum):
        flag = lambda on: "with --curriculum" if on else "without --curriculum"  # noqa: E731
        raise ValueError(
            f"--resume {path!r} was trained {flag(old['curriculum'])}, but this run is "
            f"{flag(cfg.curriculum)}; pass the same flag, or start a new run with --init {path}"
        )
    if "freeze_flow_decoder" in old and bool(old["freeze_flow_decoder"]) != bool(cfg.freeze_flow_decoder):
        raise ValueError(
            f"--resume {path!r} was trained with freeze_flow_decoder={old['freeze_flow_decoder']}, "
            f"but this run has {cfg.freeze_flow_decoder}; pass the same --freeze-flow-decoder setting"
        )
    _check_optimisation(cfg, state, old, path)
    changed = [k for k in ("data", "seed", "batch_size", "epoch_length") if k in old and old[k] != getattr(cfg, k)]
    if state.get("world_size", 1) != world_size:
        changed.append(f"world size {state.get('world_size', 1)} -> {world_size}")
    if changed:
        warnings.warn(
            f"--resume {path!r}: {', '.join(changed)} changed since the checkpoint; training continues, "
            "but not on the exact data order (or random streams) of the interrupted run",
            stacklevel=3,
        )


def _check_optimisation(cfg: TrainConfig, state: dict, old: dict, path: str) -> None:
    """ValueError for a change the resumed run cannot take: another optimiser (its state does not
    fit), another confidence bound (part of the trained model), momentum for Adam (unused)."""
    trained = old.get("optimizer")
    if trained is not None and trained != cfg.optimizer:
        paper = " (--paper sets sgd)" if cfg.optimizer == "sgd" else ""
        raise ValueError(
            f"--resume {path!r} was trained with --optimizer {trained}, but this run asks for "
            f"{cfg.optimizer}{paper}; pass --optimizer {trained}, or start a new run from its weights "
            f"with --init {path}"
        )
    bound = state["model_config"].get("confidence_range")
    if bound is not None and float(bound) != float(cfg.confidence_range):
        raise ValueError(
            f"--resume {path!r} was trained with --confidence-range {bound:g}, part of its model; this "
            f"run asks for {cfg.confidence_range:g}: pass --confidence-range {bound:g}"
        )
    if cfg.optimizer == "adam" and "momentum" in old and old["momentum"] != cfg.momentum:
        raise ValueError(
            f"--momentum {cfg.momentum:g} has no effect on the adam optimiser --resume {path!r} "
            "continues; drop --momentum"
        )


def changed_optimisation(cfg: TrainConfig, old: dict) -> dict:
    """{name: [old, new]} of --lr / --momentum / --weight-decay set anew on resume (applied to
    the restored optimiser: asked for explicitly, since the command line fills options not
    given from the checkpoint)."""
    names = ("lr", "momentum", "weight_decay")
    return {k: [old[k], getattr(cfg, k)] for k in names if k in old and old[k] != getattr(cfg, k)}


def rng_state() -> dict:
    # The numpy state as plain values (name, key as a tensor, position, Gaussian cache): a
    # checkpoint must load with torch.load(weights_only=True), which refuses numpy arrays.
    name, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    return dict(
        torch=torch.get_rng_state(),
        numpy=numpy_state,
        python=random.getstate(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, cached = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)  # older files: an array
    np.random.set_state((name, key.astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss, gradient or weight; nothing non-finite was saved."""


class ResourceError(RuntimeError):
    """The machine ran out of something training needs (memory, a loader worker); what was
    learned is on disk."""


def worker_died(err: BaseException) -> str | None:
    """What happened, when ``err`` is torch's report of a DataLoader worker that died."""
    text = str(err)
    if isinstance(err, RuntimeError) and "DataLoader worker" in text:
        first = text.strip().splitlines()[0][:160].rstrip(". ")
        return f"a data-loading worker died ({first}; the out-of-memory killer is the usual cause)"
    return None


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA's OutOfMemoryError or the CPU allocator's."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def check_finite(step: int, losses: torch.Tensor, model: torch.nn.Module, world, last_path: str, lr: float) -> None:
    """NonFiniteError naming ``step`` when a loss or a gradient is NaN or infinite (on any rank)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # One reduction over every gradient: torch._foreach_norm reads each once (0.3 ms of a ~100 ms
    # step at S = 32, width 64, on 2 cores).
    norm = torch.stack(torch._foreach_norm(grads)).sum() if grads else losses.new_zeros(())
    bad_losses = int((~torch.isfinite(losses.detach())).sum())
    bad = bad_losses > 0 or not bool(torch.isfinite(norm))
    if not D.any_rank(world, bad):
        return
    what = (
        f"the loss is not finite for {bad_losses} of {losses.numel()} samples"
        if bad_losses
        else "a gradient is not finite"
    )
    kept = f"the last checkpoint {last_path!r} is kept" if os.path.exists(last_path) else "no checkpoint was written"
    raise NonFiniteError(
        f"step {step}: {what}; training stopped before the update, {kept}. Lower --lr (now "
        f"{lr:g}), or look for non-finite values in the data"
    )


class Signals:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and stops after the current step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def optimizer_state_misfit(optimizer: torch.optim.Optimizer) -> str | None:
    """What in a loaded optimiser state has another shape than its parameter (load_state_dict
    accepts it; the first step would fail far from the file)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                    return f"{name} of shape {tuple(value.shape)} for a parameter of shape {tuple(p.shape)}"
    return None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def plateau_step(curriculum: Curriculum, scheduler, optimizer, val_loss: float, step: int) -> dict:
    """One validation round of the schedule: the curriculum sees ``val_loss`` first (a plateau
    shifts its window); the learning-rate scheduler (``ReduceLROnPlateau``) sees it only when the
    curriculum had already finished before this round (or there is none), so the LR stays at its
    start value through every window and begins to fall only at 40-90%.

    Returns the curriculum's record (improved, plateau, shifted, bad_rounds, window) plus ``lr``
    (after this round) and ``lr_reduced``.
    """
    finished_before = curriculum.finished
    info = curriculum.observe(val_loss, step)
    lr_before = optimizer.param_groups[0]["lr"]
    if finished_before:
        scheduler.step(val_loss)
    lr = optimizer.param_groups[0]["lr"]
    return dict(info, lr=lr, lr_reduced=lr < lr_before, lr_schedule_active=finished_before)


def resource_failure(run, err: BaseException) -> ResourceError | None:
    """One ResourceError for a loader worker that died (the OOM killer's usual victim) or memory
    that ran out; None for anything else. The steps since the last checkpoint are saved when the
    weights are whole (the failure did not strike inside the optimiser's update)."""
    cfg = run.cfg
    died = worker_died(err)
    if died is not None:
        if run.updating:
            kept = f"the weights were mid-update, so the last checkpoint {run.last_path!r} is kept"
        else:
            run.checkpoint(run.last_path)
            kept = f"checkpoint {run.last_path!r} written at step {run.step}"
        return ResourceError(
            f"step {run.step + 1}: {died}; {kept}. Lower --num-workers (now {cfg.num_workers}) or "
            "--batch-size, then continue with --resume"
        )
    if out_of_memory(err):
        last = (
            f"the last checkpoint {run.last_path!r} is kept" if os.path.exists(run.last_path) else "no checkpoint yet"
        )
        return ResourceError(
            f"step {run.step + 1}: out of memory on {run.world.device} ({first_line(err)}); lower "
            f"--batch-size (now {cfg.resolved_batch_size()}), --size ({cfg.size}) or --width ({cfg.width}); "
            f"{last}, continue with --resume"
        )
    return None
