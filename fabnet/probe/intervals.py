"""Confidence intervals for probe metrics: a bootstrap over test identities.

Frames of one person (and of one track) are not independent samples: a probe that fails on a
face shape fails on all its frames. The interval therefore resamples whole identities with
replacement and recomputes the metric on the frames of the drawn identities; its 2.5 and 97.5
percentiles are the 95 % interval. With 6 test identities such an interval spans most of the
range between noise and a supervised encoder, which is what it should say.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def identity_bootstrap(
    metric: Callable[[np.ndarray], float],
    identities: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float]:
    """[low, high]: the percentile interval of ``metric(rows)`` over identity resamples.

    metric: maps an index array of rows (test frames, repeats allowed) to a number; NaN results
        (e.g. an AUC on a resample with one class) are left out. identities: (N,) the identity of
        each row. resamples: bootstrap draws. level: the interval's coverage.
    """
    identities = np.asarray(identities)
    if identities.ndim != 1 or len(identities) == 0:
        raise ValueError(f"identities must be a non-empty 1-d array; got shape {identities.shape}")
    if int(resamples) != resamples or resamples < 2:
        raise ValueError(f"resamples must be an integer >= 2; got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    _, inverse = np.unique(identities, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(resamples)):
        drawn = rng.integers(len(rows_of), size=len(rows_of))
        value = metric(np.concatenate([rows_of[i] for i in drawn]))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


__all__ = ["identity_bootstrap"]
