"""Experiment loggers for the command line's ``--log tensorboard`` / ``--log wandb``.

They are written from the host between compiled chunks (:func:`purerl.driver.train`'s
``on_chunk``), never from inside the jitted program: logging costs one device-to-host copy of a
chunk's metrics, which the CLI makes anyway for its CSV. Metric names are the CSV's columns;
the x-axis is ``env_steps`` (environment steps per seed), as in ``learning_curve.png``.

- TensorBoard (``pip install 'purerl[tensorboard]'``, written with tensorboardX): one
  TensorBoard run per seed, ``RUN_DIR/tensorboard/seed_<i>``, for up to :data:`PER_SEED_MAX`
  seeds; with more seeds, three runs ``mean``, ``min`` and ``max`` over the seeds. A resumed run
  writes new event files in the same directories, starting with a purge marker at its first new
  step, so TensorBoard drops what an interrupted attempt logged past the checkpoint.
- Weights & Biases (``pip install 'purerl[wandb]'``): one wandb run per purerl run, its id saved
  in ``config.json`` so ``purerl resume`` continues the same wandb run; the mean over seeds of
  every metric at each update (``step`` = the update index). wandb reads its usual environment
  variables: ``WANDB_MODE=offline`` works without a network (``wandb sync`` uploads later),
  ``WANDB_PROJECT`` (default ``purerl``), ``WANDB_ENTITY``. Files go to ``RUN_DIR/wandb``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

__all__ = ["KINDS", "PER_SEED_MAX", "Logger", "TensorBoardLogger", "WandbLogger", "check",
           "chosen", "make"]

KINDS = ("tensorboard", "wandb")
PER_SEED_MAX = 16  # more seeds: TensorBoard gets their mean / min / max, not one run each

Metrics = Mapping[str, np.ndarray]  # name -> [seeds, updates], as the CLI's CSV

_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


class Logger(Protocol):
    def write(self, metrics: Metrics, first_update: int) -> None:
        """Log the metrics of consecutive updates ``first_update, first_update + 1, ...``."""

    def close(self) -> None: ...


def check(kinds: Sequence[str]) -> None:
    """ValueError (one line) for an unknown logger or one whose package is not installed."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown logger {kind!r}; --log takes one of {', '.join(KINDS)}")
        module, extra = _PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"--log {kind} needs the {module} package: "
                             f"pip install 'purerl[{extra}]'")


def chosen(requested: Sequence[str] | None, saved: Sequence[str] = ()) -> list[str]:
    """The loggers of ``--log`` (``none`` turns them off; not given: ``saved``, the run's),
    checked (:func:`check`), each once."""
    kinds = list(saved) if requested is None else [k for k in requested if k != "none"]
    check(kinds)
    return list(dict.fromkeys(kinds))


def _names(metrics: Metrics) -> list[str]:
    return sorted(k for k in metrics if k != "env_steps")


class TensorBoardLogger:
    """TensorBoard event files under ``log_dir`` (see the module docstring for the layout)."""

    def __init__(self, log_dir: str | os.PathLike, num_seeds: int, purge_step: int | None = None):
        from tensorboardX import SummaryWriter  # an optional extra: imported when used

        runs = ([f"seed_{i}" for i in range(num_seeds)] if num_seeds <= PER_SEED_MAX
                else ["mean", "min", "max"])
        # purge_step: TensorBoard discards the events of earlier files at steps >= it
        self.writers = {run: SummaryWriter(os.fspath(Path(log_dir) / run), purge_step=purge_step)
                        for run in runs}

    def write(self, metrics: Metrics, first_update: int) -> None:
        steps = np.asarray(metrics["env_steps"])
        if "seed_0" in self.writers:
            rows = {f"seed_{i}": i for i in range(steps.shape[0])}
            values = {name: np.asarray(metrics[name]) for name in _names(metrics)}
            for run, i in rows.items():
                self._add(run, steps[i], {n: v[i] for n, v in values.items()})
            return
        with warnings.catch_warnings():  # an update where every seed's value is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            for run, reduce in (("mean", np.nanmean), ("min", np.nanmin), ("max", np.nanmax)):
                self._add(run, steps[0], {n: reduce(np.asarray(metrics[n], np.float64), axis=0)
                                          for n in _names(metrics)})

    def _add(self, run: str, steps: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        writer = self.writers[run]
        for name, column in values.items():
            for step, value in zip(steps, column):
                if not np.isnan(value):  # e.g. eval_return between evaluations (empty in the CSV)
                    writer.add_scalar(name, float(value), global_step=int(step))
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class WandbLogger:
    """One wandb run (see the module docstring); ``run_id`` continues an existing one."""

    def __init__(self, run_dir: str | os.PathLike, name: str, config: Mapping[str, Any],
                 run_id: str | None = None):
        import wandb  # an optional extra: imported when used

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "purerl", name=name,
                              id=run_id, resume="allow" if run_id else None,
                              dir=os.fspath(run_dir), config=dict(config))
        self.run.define_metric("*", step_metric="env_steps")

    @property
    def id(self) -> str:
        return self.run.id

    def write(self, metrics: Metrics, first_update: int) -> None:
        steps = np.asarray(metrics["env_steps"])[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = {n: np.nanmean(np.asarray(metrics[n], np.float64), axis=0)
                     for n in _names(metrics)}
        for u, step in enumerate(steps):
            row = {n: float(v[u]) for n, v in means.items() if not np.isnan(v[u])}
            self.run.log({"env_steps": int(step), **row}, step=first_update + u)

    def close(self) -> None:
        self.run.finish()


def make(kinds: Sequence[str], run_dir: str | os.PathLike, num_seeds: int,
         config: Mapping[str, Any], *, wandb_id: str | None = None,
         purge_step: int | None = None) -> list[Logger]:
    """The loggers named in ``kinds`` for the run in ``run_dir`` (validated by :func:`check`)."""
    check(kinds)
    run_dir = Path(run_dir)
    out: list[Logger] = []
    for kind in dict.fromkeys(kinds):
        if kind == "tensorboard":
            out.append(TensorBoardLogger(run_dir / "tensorboard", num_seeds, purge_step))
        else:
            out.append(WandbLogger(run_dir, run_dir.name, config, wandb_id))
    return out
