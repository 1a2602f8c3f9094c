"""The paper's curriculum: learn from the easiest samples of a batch first.

The per-sample L1 losses of a batch are sorted and the mean over the window [lo, hi) of the
sorted list is back-propagated: indices floor(lo * B) .. floor(hi * B) - 1. The window starts at
0-50% (the easier half). After each validation plateau (no improvement for ``patience``
validation rounds) it moves up by 10 points, until it reaches 40-90%; there it stops (the
hardest 10% - outliers, bad tracks - are never used) and the learning-rate schedule takes over.

Validation ignores the window: it averages the whole batch.

All the state is plain numbers (``state_dict``), saved in every checkpoint.
"""

from __future__ import annotations

import math

import torch

# Window positions in tenths, so 0.1 shifts never accumulate float error (0.30000000000000004).
START = (0, 5)
END = (4, 9)
STEP = 1


class Curriculum:
    """Window [lo, hi) over the sorted per-sample losses, shifted on validation plateaus.

    enabled: False keeps the full window [0, 1) and never shifts (plain mean; the LR schedule
        acts from the start). patience: validation rounds without improvement that make a plateau.
    min_delta: relative improvement (fraction of the best loss) that counts as one.
    """

    def __init__(self, enabled: bool = True, patience: int = 2, min_delta: float = 1e-3):
        if int(patience) != patience or patience < 1:
            raise ValueError(f"patience must be an integer >= 1; got {patience!r}")
        self.enabled = bool(enabled)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.lo10, self.hi10 = START if self.enabled else (0, 10)
        self.best = math.inf
        self.bad_rounds = 0
        self.shifts: list[dict] = []  # {"step", "from", "to"} per shift

    # -- window ------------------------------------------------------------------------------
    @property
    def window(self) -> tuple[float, float]:
        return self.lo10 / 10, self.hi10 / 10

    @property
    def finished(self) -> bool:
        """True once the window is at its last position (or without a curriculum)."""
        return not self.enabled or (self.lo10, self.hi10) == END

    def bounds(self, batch: int) -> tuple[int, int]:
        """Index range [floor(lo * B), floor(hi * B)) of the sorted losses; never empty."""
        lo = self.lo10 * batch // 10
        hi = self.hi10 * batch // 10
        hi = max(hi, lo + 1)
        return min(lo, batch - 1), min(hi, batch)

    def select(self, losses: torch.Tensor) -> torch.Tensor:
        """Mean of the window of the sorted per-sample ``losses`` (B,); differentiable."""
        if losses.dim() != 1 or losses.numel() == 0:
            raise ValueError(f"losses must be a non-empty (B,) tensor; got {tuple(losses.shape)}")
        lo, hi = self.bounds(losses.numel())
        if (lo, hi) == (0, losses.numel()):
            return losses.mean()
        ranked, _ = torch.sort(losses)
        return ranked[lo:hi].mean()

    # -- plateaus ----------------------------------------------------------------------------
    def observe(self, val_loss: float, step: int = 0) -> dict:
        """Record one validation loss. Returns {"improved", "plateau", "shifted", "bad_rounds",
        "window"}: ``plateau`` when ``patience`` rounds passed without improvement, ``shifted``
        when that moved the window. A shift restarts the plateau counter but keeps the best loss:
        validation averages the whole batch, so it is the same measure before and after a shift."""
        improved = val_loss < self.best * (1 - self.min_delta) if math.isfinite(self.best) else True
        if improved:
            self.best = float(val_loss)
            self.bad_rounds = 0
        else:
            self.bad_rounds += 1
        plateau = self.bad_rounds >= self.patience
        shifted = False
        if plateau and not self.finished:
            old = self.window
            self.lo10 += STEP
            self.hi10 += STEP
            self.shifts.append({"step": int(step), "from": list(old), "to": list(self.window)})
            self.bad_rounds = 0
            shifted = True
        return dict(
            improved=improved, plateau=plateau, shifted=shifted, bad_rounds=self.bad_rounds, window=list(self.window)
        )

    def state_dict(self) -> dict:
        return dict(
            enabled=self.enabled,
            patience=self.patience,
            min_delta=self.min_delta,
            lo10=self.lo10,
            hi10=self.hi10,
            best=self.best,
            bad_rounds=self.bad_rounds,
            shifts=list(self.shifts),
        )

    def load_state_dict(self, state: dict) -> None:
        self.enabled = bool(state["enabled"])
        self.lo10, self.hi10 = int(state["lo10"]), int(state["hi10"])
        self.best = float(state["best"])
        self.bad_rounds = int(state["bad_rounds"])
        self.shifts = list(state["shifts"])
        # patience / min_delta stay as configured now: a resumed run may change them.

    def __repr__(self) -> str:
        lo, hi = self.window
        return f"Curriculum(window=[{lo:.1f}, {hi:.1f}), bad_rounds={self.bad_rounds}/{self.patience})"
