"""The chunked training driver: :func:`train` runs every seed in compiled chunks with a progress
bar (a library function: ``on_chunk`` sees each chunk), and :func:`train_run` is what ``purerl
train`` and ``resume`` run in a run directory: checkpoints between chunks, the ``--log``
loggers, then the result files (:mod:`purerl.results`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from tqdm import tqdm

from purerl import checkpoint, faults, loggers, loop, results, rundir, signals, sweeps
from purerl.results import Metrics

__all__ = ["concat", "train", "train_run", "write_results"]


def train(agent: loop.Agent, keys: jax.Array | None, chunk: int, *, state: Any = None,
          align: int | None = None,
          on_chunk: Callable[[int, Any, list[Metrics]], None] | None = None,
          placement: Any = None, hparams: Mapping[str, Any] | None = None,
          check_finite: bool = True) -> Metrics:
    """Run all seeds in chunks of ``chunk`` updates with a progress bar; metrics are
    ``[seeds, updates]`` numpy arrays of the updates run here. ``state``: continue from this
    state (:func:`purerl.loop.run_chunked`); ``align``: chunk boundaries on its multiples;
    ``on_chunk(updates_done, state, chunks)`` is called after every chunk (``chunks``: the
    metrics of the chunks so far); ``placement``: where the chunks run (a
    :class:`purerl.placement.Placement`, ``--devices``; default one device); ``hparams``:
    per-seed hyperparameters (leading axis, a sweep's runs); ``check_finite``: the divergence
    watchdog (off for a sweep, which marks diverged runs and goes on)."""
    chunks: list[Metrics] = []
    postfix: dict[str, str] = {}
    start = 0 if state is None else loop.updates_done(state)
    with tqdm(total=agent.num_updates, initial=start, unit="update", disable=None,
              dynamic_ncols=True) as bar:
        run_chunked = loop.run_chunked if placement is None else placement.run_chunked
        for done, state, metrics in run_chunked(agent, keys, hparams=hparams, chunk=chunk,
                                                state=state, align=align,
                                                check_finite=check_finite):
            chunks.append({k: np.asarray(v) for k, v in jax.device_get(metrics).items()})
            if on_chunk is not None:
                on_chunk(done, state, chunks)
            for name, short in (("eval_return", "eval"), ("episode_return", "episode")):
                latest = _latest_mean(chunks[-1].get(name))
                if latest is not None:
                    postfix[short] = f"{latest:.1f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(done - bar.n)
    return concat(chunks)


def concat(chunks: Sequence[Metrics]) -> Metrics:
    """Metrics of consecutive chunks joined along the update axis."""
    chunks = [c for c in chunks if c]
    return {k: np.concatenate([c[k] for c in chunks], axis=1) for k in chunks[0]} if chunks \
        else {}


def _latest_mean(values: np.ndarray | None) -> float | None:
    """Mean over seeds of the last update that has a value (None if there is none)."""
    if values is None:
        return None
    for column in values.T[::-1]:
        if not np.isnan(column).all():
            return float(np.nanmean(column))
    return None


def train_run(algo: str, config: Any, agent: loop.Agent, run_dir: Path, *,
              keys: jax.Array | None = None, resumed: checkpoint.RestoredRun | None = None,
              seeds: int, seed: int | None, chunk: int, every: int | None, keep: int,
              log: Sequence[str] = (), placement: Any, sweep: sweeps.Plan | None = None
              ) -> str:
    """Train (from ``keys``, or on from the restored run ``resumed``) on ``placement`` (a
    :class:`purerl.placement.Placement`) with a checkpoint every ``every`` updates and after
    the last, logging every chunk to the ``log`` loggers (:mod:`purerl.loggers`), then write the
    result files (the restored metrics followed by the new); returns the summary table. The
    caller holds the run directory's lock.

    ``sweep``: the run is that sweep's (``seeds`` is then its number of runs, configurations
    x seeds, each with its hyperparameters): no divergence watchdog -- a run whose parameters
    turn non-finite is marked (in every checkpoint's ``extra``) and the others go on -- and
    the sweep's result files (:func:`purerl.sweeps.write_results`)."""
    old = resumed.metrics if resumed is not None else {}
    extra = resumed.metadata["extra"] if resumed else {}
    wall_before = float(extra.get("wall_s", 0.0))
    tracker = None if sweep is None else sweeps.DivergenceTracker(sweep.num_runs,
                                                                  extra.get("diverged_at"))
    sinks = _open_loggers(log, run_dir, seeds, resumed)
    start = time.perf_counter()

    def after_chunk(done: int, state: Any, chunks: list[Metrics]) -> None:
        if tracker is not None:
            tracker.update(state, done)
        for sink in sinks:
            sink.write(chunks[-1], done - chunks[-1]["env_steps"].shape[1])
        if done == agent.num_updates or (every and done % every == 0):
            wall = wall_before + time.perf_counter() - start
            saved = {"wall_s": round(wall, 3)}
            if tracker is not None:
                saved["diverged_at"] = tracker.at.tolist()
            checkpoint.save(run_dir, config, state, concat([old, *chunks]), seed=seed,
                            keep=keep, extra=saved)
        faults.pause_point("chunk")
        signals.raise_if_interrupted()  # a signal whose exception was swallowed mid-chunk

    faults.pause_point("start")  # config.json is written, nothing compiled yet
    try:
        new = train(agent, keys, chunk, state=None if resumed is None else resumed.state,
                    align=every, on_chunk=after_chunk, placement=placement,
                    hparams=None if sweep is None or resumed else sweep.hparams(),
                    check_finite=sweep is None)
    finally:
        for sink in sinks:
            sink.close()
    wall_s = wall_before + time.perf_counter() - start
    faults.pause_point("trained")  # the final checkpoint is saved, no result file yet
    return write_results(algo, config, run_dir, concat([old, new]), wall_s, seeds, placement,
                         sweep, None if tracker is None else tracker.at)


def write_results(algo: str, config: Any, run_dir: Path, metrics: Metrics, wall_s: float,
                  seeds: int, placement: Any, sweep: sweeps.Plan | None = None,
                  diverged_at: Any = None) -> str:
    """A run's result files (:func:`purerl.results.write`), or a sweep's; the summary table."""
    devices = placement.describe(config, seeds)
    if sweep is None:
        return results.write(algo, config, run_dir, metrics, wall_s, seeds, devices)
    tracker = sweeps.DivergenceTracker(sweep.num_runs, diverged_at)
    return sweeps.write_results(run_dir, sweeps.SweepResult(
        sweep, sweeps.by_configuration(metrics, sweep), tracker.by_configuration(sweep), wall_s),
        devices)


def _open_loggers(kinds: Sequence[str], run_dir: Path, seeds: int,
                  resumed: checkpoint.RestoredRun | None) -> list[loggers.Logger]:
    """The run's loggers; a resumed run continues its wandb run (the id in config.json) and
    purges what TensorBoard holds past the checkpoint; a run trained from the start in a
    directory that holds TensorBoard files of an earlier attempt purges all of them. A new
    wandb id goes into config.json."""
    if not kinds:
        return []
    saved = rundir.read_config(run_dir) or {}
    purge = 0 if (run_dir / "tensorboard").exists() else None
    if resumed is not None:
        purge = int(np.asarray(resumed.state.run.env_steps).reshape(-1)[0]) + 1
    sinks = loggers.make(kinds, run_dir, seeds, saved, wandb_id=saved.get("wandb_id"),
                         purge_step=purge)
    for sink in sinks:
        if isinstance(sink, loggers.WandbLogger) and sink.id != saved.get("wandb_id"):
            rundir.write_json(run_dir / rundir.CONFIG, {**saved, "wandb_id": sink.id})
    return sinks
