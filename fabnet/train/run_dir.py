"""A run directory belongs to one run at a time, and what is in it is never replaced unasked.

- ``RunLock``: an advisory lock (``flock``) on ``RUN/.lock``, holding the owner's pid and command.
  A second ``fabnet train`` on the same ``--out`` is refused, naming that pid. The kernel drops
  the lock when its process ends, however it ends (kill -9 included), so no lock outlives a run.
- ``check_existing_run``: ``--out`` holding a run (metrics.jsonl or a checkpoint) is continued
  with ``--resume`` or replaced with ``--overwrite``, never silently truncated; resuming an
  earlier checkpoint of the same run (``--resume RUN/checkpoints/best.pt`` behind last.pt)
  would drop the later steps, so it too needs ``--overwrite`` (or another ``--out``, a branch).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import time

from fabnet.train import distributed as D

LOCK_FILE = ".lock"
# What a run writes into its directory; --overwrite removes exactly these.
RUN_FILES = ("metrics.jsonl", "config.json", "checkpoints", "figures")


class RunDirectoryInUse(ValueError):
    """Another process holds the run directory's lock."""


class RunLock:
    """``with RunLock(run_dir): ...``: the run directory is this process's until the block ends."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirectoryInUse(
                f"--out {os.path.dirname(self.path)!r} is in use by another run ({holder}); wait for "
                "it to finish or stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        os.write(fd, json.dumps(record).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a waiter)
            self.fd = None


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {record['pid']}, started {record['started']}: {record['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def existing_run(run_dir: str) -> bool:
    """Whether ``run_dir`` already holds a run's metrics or checkpoints."""
    checkpoints = os.path.join(run_dir, "checkpoints")
    has_checkpoint = os.path.isdir(checkpoints) and any(n.endswith(".pt") for n in os.listdir(checkpoints))
    return has_checkpoint or os.path.exists(os.path.join(run_dir, "metrics.jsonl"))


def _checkpoint_step(path: str) -> int | None:
    """The step recorded in checkpoint ``path`` (memory-mapped: the weights are not read)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: the resumed file is checked on its own when it is loaded
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def check_existing_run(run_dir: str, *, resume_path: str | None, overwrite: bool, resume_step: int | None) -> None:
    """ValueError when starting or resuming here would replace a run's files unasked.

    resume_path, resume_step: the checkpoint being resumed and its step (None: not resuming).
    Resuming the run's own last.pt is continuing it (records after its step were lost with the
    process that wrote them); resuming an earlier checkpoint while last.pt is further on would
    drop the steps between them.
    """
    if not existing_run(run_dir):
        return
    if resume_path is None and not overwrite:
        raise ValueError(
            f"--out {run_dir!r} already holds a run (metrics.jsonl / checkpoints); continue it with "
            "--resume, replace it with --overwrite, or choose another --out"
        )
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if resume_path is None or overwrite or resume_step is None or not os.path.exists(last):
        return
    if os.path.realpath(resume_path) == os.path.realpath(last):
        return
    later = _checkpoint_step(last)
    if later is not None and later > resume_step:
        raise ValueError(
            f"--resume {resume_path!r} is at step {resume_step}, but the run in --out {run_dir!r} went on to "
            f"step {later} (checkpoints/last.pt): resuming here would drop steps {resume_step + 1}-{later} from "
            "its metrics and replace last.pt. Branch into a new directory (--out NEW --resume CKPT), or pass "
            "--overwrite to rewind this run"
        )


def clear_run(run_dir: str) -> None:
    """Remove what a run wrote into ``run_dir`` (``RUN_FILES``), for ``--overwrite``."""
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


@contextlib.contextmanager
def owned(run_dir: str, world: D.World):
    """The run directory locked by rank 0 for the whole run; every rank refuses together when
    another process holds it (so none waits on a collective the others never reach)."""
    lock, refused = RunLock(os.path.abspath(run_dir)) if world.is_main else None, None
    if lock is not None:
        try:
            lock.__enter__()
        except RunDirectoryInUse as err:
            lock, refused = None, err
    if D.any_rank(world, refused is not None):
        raise refused or RunDirectoryInUse(f"--out {run_dir!r} is in use by another run (refused by rank 0)")
    try:
        yield
    finally:
        if lock is not None:
            lock.__exit__()
