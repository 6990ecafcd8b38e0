"""Interval estimates for few-seed results, as Agarwal et al. (2021), "Deep Reinforcement
Learning at the Edge of the Statistical Precipice" (NeurIPS), recommend and their ``rliable``
package computes:

* the interquartile mean (IQM, section 4.3): the mean of the middle 50% of the runs,
  ``scipy.stats.trim_mean(x, 0.25)`` -- robust to the one seed that fails or the one that
  shines, and far less noisy than the median with 5-10 runs;
* stratified bootstrap confidence intervals (section 4.1): resample the runs of each task with
  replacement (the strata), recompute the aggregate over all tasks, and take the percentiles of
  the resampled aggregates;
* performance profiles (section 4.2): the fraction of runs whose (normalised) score exceeds
  ``tau``, as a function of ``tau``, averaged over tasks.

Scores are arrays ``[runs]`` (one task) or ``[runs, tasks]``, or a list of per-task ``[runs]``
arrays where tasks have different numbers of runs; NaN (a diverged run) is not a
score, and a function given one raises. NumPy only (SciPy's ``trim_mean``), so purerl needs no
``rliable`` (which pulls in arch, pandas and seaborn).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from scipy import stats as _scipy_stats

__all__ = ["Interval", "Summary", "bootstrap_interval", "iqm", "mean", "median", "normalize",
           "performance_profile", "summarize"]

# a function of all runs (pooled over tasks) to one number
Statistic = Callable[[np.ndarray], float]


def _tasks(scores: Any) -> list[np.ndarray]:
    """``scores`` as one float64 array of runs per task: from ``[runs]`` (one task),
    ``[runs, tasks]``, or a list of per-task ``[runs]`` arrays (tasks may have different
    numbers of runs); ValueError for NaN or a task without runs."""
    if isinstance(scores, (list, tuple)) and scores and np.ndim(scores[0]) == 1:
        tasks = [np.asarray(t, np.float64) for t in scores]
    else:
        x = np.asarray(scores, np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"scores must be [runs], [runs, tasks] or a list of [runs] "
                             f"arrays; got shape {np.shape(scores)}")
        tasks = list(x.T)
    if not tasks or any(t.ndim != 1 or t.size == 0 for t in tasks):
        raise ValueError("scores need at least one task with at least one run")
    if not all(np.isfinite(t).all() for t in tasks):
        raise ValueError("scores hold NaN or inf (a diverged run?): leave those runs out")
    return tasks


def iqm(scores: Any) -> float:
    """Interquartile mean of all runs of all tasks: ``trim_mean(runs, 0.25)``, the mean after
    dropping the lowest and highest 25% (``floor(0.25 n)`` runs at each end, as SciPy and
    rliable do)."""
    return float(_scipy_stats.trim_mean(np.concatenate(_tasks(scores)), 0.25))


def mean(scores: Any) -> float:
    """The mean of all runs of all tasks."""
    return float(np.concatenate(_tasks(scores)).mean())


def median(scores: Any) -> float:
    """The median of all runs of all tasks."""
    return float(np.median(np.concatenate(_tasks(scores))))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def bootstrap_interval(scores: np.ndarray, statistic: Statistic = iqm, *,
                       confidence: float = 0.95, reps: int = 2000, seed: int = 0) -> Interval:
    """``statistic(scores)`` with a percentile stratified-bootstrap interval.

    Each of ``reps`` resamples draws, for every task (column) independently and in task
    order, as many runs as it has, with replacement, from that task's runs
    (``rng.integers(0, runs, (reps, runs))``, ``rng = numpy.random.default_rng(seed)``); the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of
    ``statistic`` over the resamples (Agarwal et al. 2021, section 4.1; Efron & Tibshirani
    1993, section 13.3). One task is the ordinary bootstrap. Seeded: the same inputs give the
    same interval."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    tasks = _tasks(scores)
    rng = np.random.default_rng(seed)
    # [reps, all runs]: each task's runs resampled (with replacement) among its own runs
    resampled = np.concatenate([t[rng.integers(0, t.size, size=(reps, t.size))]
                                for t in tasks], axis=1)
    if statistic is iqm or statistic is mean:  # the same numbers, one vectorised call
        values = (_scipy_stats.trim_mean(resampled, 0.25, axis=1) if statistic is iqm
                  else resampled.mean(axis=1))
    else:
        values = np.array([statistic(r) for r in resampled])
    alpha = (1 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(statistic(np.concatenate(tasks))), float(low), float(high),
                    confidence)


def normalize(scores: np.ndarray, low: float | np.ndarray, high: float | np.ndarray
              ) -> np.ndarray:
    """``(scores - low) / (high - low)``: 0 at ``low`` (e.g. a random policy's return), 1 at
    ``high`` (e.g. a task's target); per task when ``low`` / ``high`` are ``[tasks]``."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if np.any(high == low):
        raise ValueError("normalize: high equals low")
    return (np.asarray(scores, np.float64) - low) / (high - low)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``[len(taus)]``: for each ``tau``, the fraction of runs with a score above ``tau``,
    averaged over tasks (each task weighs the same whatever its number of runs; Agarwal et al.
    2021, eq. 1)."""
    taus = np.asarray(taus, np.float64)
    return np.mean([(t[None, :] > taus[:, None]).mean(axis=1) for t in _tasks(scores)], axis=0)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, median, IQM with its stratified-bootstrap interval, std and count of runs."""

    n: int
    mean: float
    median: float
    std: float
    iqm: Interval

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "median": self.median, "std": self.std,
                "iqm": self.iqm.value, "iqm_low": self.iqm.low, "iqm_high": self.iqm.high,
                "confidence": self.iqm.confidence}


def summarize(scores: np.ndarray, *, confidence: float = 0.95, reps: int = 2000,
              seed: int = 0) -> Summary:
    """The :class:`Summary` of ``scores`` (``[runs]`` or ``[runs, tasks]``)."""
    runs = np.concatenate(_tasks(scores))
    return Summary(int(runs.size), mean(runs), median(runs), float(runs.std()),
                   bootstrap_interval(scores, iqm, confidence=confidence, reps=reps, seed=seed))
