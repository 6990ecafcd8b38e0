"""Hyperparameter sweeps in one compiled program, and the statistics that rank them.

A sweep trains every configuration x every seed of a grid (and/or a seeded random search) over
traced hyperparameters as one vmapped program: the runs are the lanes of one leading axis,
``run = configuration * seeds + seed``, each with its own key and its own hyperparameter values
(:func:`purerl.loop.run_chunked` with batched ``hparams``). Seed ``s`` of every configuration
has the key seed ``s`` of ``purerl train --seed SEED --seeds SEEDS`` has, so each configuration's
runs are the runs ``train`` makes with that configuration (equal within the rounding of a
batched hyperparameter, docs/contract.md).

A diverged run (non-finite parameters after a chunk) does not stop the sweep: its lanes are
independent of the others, so it is marked (with the update after which it was first seen
non-finite) and the sweep goes on. Configurations are ranked by the interquartile mean of their
seeds' final deterministic evaluation returns, with a 95% bootstrap interval
(:mod:`purerl.stats`); a configuration with a diverged seed is listed after the ranked ones.

``purerl sweep ALGO --env ENV --grid KEY=V1,V2 --sample N KEY=DIST --seeds S`` runs one in a
run directory (checkpoints, ``purerl resume``); :func:`sweep` is the Python entry point.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import purerl
from purerl import loop, rundir, stats
from purerl.results import as_lists, format_table
from purerl.config import BaseConfig

__all__ = ["Distribution", "Plan", "Ranked", "SweepResult", "make_plan", "parse_distribution",
           "parse_grid", "sweep", "write_results"]

# the files of a finished sweep's run directory (plots of each swept key come on top)
RESULTS = ("metrics.json", "results.csv", "summary.json", "summary.txt", "best.json",
           "learning_curves.png")
TOP_CURVES = 5  # configurations drawn in learning_curves.png


# ------------------------------------------------------------------------------ parsing

@dataclasses.dataclass(frozen=True)
class Distribution:
    """A random-search distribution: ``loguniform(LO,HI)``, ``uniform(LO,HI)`` or
    ``choice(A,B,...)``."""

    kind: str
    args: tuple[float, ...]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "uniform":
            return rng.uniform(self.args[0], self.args[1], n)
        if self.kind == "loguniform":
            return np.exp(rng.uniform(math.log(self.args[0]), math.log(self.args[1]), n))
        return rng.choice(np.asarray(self.args), n)

    def __str__(self) -> str:
        return f"{self.kind}({','.join(f'{a:g}' for a in self.args)})"


_DIST = re.compile(r"^\s*(loguniform|uniform|choice)\s*\((.*)\)\s*$")


def parse_distribution(text: str) -> Distribution:
    """``loguniform(1e-4,1e-2)`` -> :class:`Distribution`; ValueError (one line) if it does not
    parse: an unknown kind, a bound that is not a number, ``LO >= HI``, ``LO <= 0`` for
    loguniform, an empty choice."""
    match = _DIST.match(text)
    if not match:
        raise ValueError(f"cannot parse distribution {text!r}: expected loguniform(LO,HI), "
                         "uniform(LO,HI) or choice(A,B,...)")
    kind, body = match.groups()
    try:
        args = tuple(float(a) for a in body.split(",") if a.strip())
    except ValueError:
        raise ValueError(f"cannot parse distribution {text!r}: its arguments must be numbers"
                         ) from None
    if not all(math.isfinite(a) for a in args):
        raise ValueError(f"distribution {text!r}: arguments must be finite")
    if kind == "choice":
        if not args:
            raise ValueError(f"distribution {text!r}: choice needs at least one value")
    elif len(args) != 2 or args[0] >= args[1]:
        raise ValueError(f"distribution {text!r}: {kind} takes two bounds LO < HI")
    elif kind == "loguniform" and args[0] <= 0:
        raise ValueError(f"distribution {text!r}: loguniform needs 0 < LO")
    return Distribution(kind, args)


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """``["lr=1e-3,3e-3", "ent_coef=0,0.01"]`` -> ``{"lr": [...], "ent_coef": [...]}``;
    ValueError (one line) for a malformed item, an empty value list, a value that is not a
    number, or a key given twice."""
    grid: dict[str, list[float]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; list all its values in one --grid")
        parts = [p.strip() for p in text.split(",")]
        if not any(parts):
            raise ValueError(f"--grid {key}= has no values; give KEY=V1,V2,...")
        try:
            grid[key] = [float(p) for p in parts if p]
        except ValueError:
            raise ValueError(f"--grid {key}: values must be numbers, got {text!r}") from None
    return grid


# ------------------------------------------------------------------------------- the plan

@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sweep trains: the base ``config``, one hyperparameter dict per configuration
    (``points``), ``seeds`` seeds each from base seed ``seed``, and how the points were made
    (``grid``, ``samples``, ``num_samples``, ``sample_seed``: kept so the sweep is
    reproducible and its directory says what it swept)."""

    config: BaseConfig
    points: tuple[dict[str, float], ...]
    seeds: int
    seed: int = 0
    grid: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    samples: dict[str, str] = dataclasses.field(default_factory=dict)
    num_samples: int = 0
    sample_seed: int = 0

    @property
    def keys_swept(self) -> list[str]:
        return list(self.points[0])

    @property
    def num_runs(self) -> int:
        return len(self.points) * self.seeds

    def configs(self) -> list[BaseConfig]:
        """Each configuration as a full Config (the base with its point)."""
        return [self.config.replace(**point) for point in self.points]

    def keys(self) -> jax.Array:
        """``[configurations * seeds]`` keys: seed ``s`` of every configuration has key ``s`` of
        ``jax.random.split(jax.random.key(seed), seeds)``, as ``purerl train`` splits them."""
        keys = jax.random.split(jax.random.key(self.seed), self.seeds)
        return keys[jnp.tile(jnp.arange(self.seeds), len(self.points))]

    def hparams(self) -> dict[str, jax.Array]:
        """``[configurations * seeds]`` float32 values of each swept hyperparameter."""
        return {k: jnp.asarray(np.repeat([p[k] for p in self.points], self.seeds), jnp.float32)
                for k in self.keys_swept}

    def to_json(self) -> dict[str, Any]:
        """What config.json records under ``"sweep"`` (the base config is its other fields)."""
        return {"grid": self.grid, "samples": self.samples, "num_samples": self.num_samples,
                "sample_seed": self.sample_seed, "points": list(self.points)}

    @classmethod
    def from_json(cls, config: BaseConfig, saved: Mapping[str, Any], seeds: int, seed: int
                  ) -> "Plan":
        points = saved.get("points")
        if not isinstance(points, list) or not points or not all(
                isinstance(p, dict) and p for p in points):
            raise ValueError("config.json's \"sweep\" has no valid \"points\"; run the sweep again")
        return cls(config, tuple({k: float(v) for k, v in p.items()} for p in points), seeds,
                   seed, dict(saved.get("grid") or {}), dict(saved.get("samples") or {}),
                   int(saved.get("num_samples") or 0), int(saved.get("sample_seed") or 0))


def make_plan(config: BaseConfig, grid: Mapping[str, Sequence[float]] | None = None, *,
              samples: Mapping[str, Distribution | str] | None = None, num_samples: int = 0,
              seeds: int = 1, seed: int = 0, sample_seed: int = 0) -> Plan:
    """The configurations of a sweep: the product of ``grid``'s value lists, times
    ``num_samples`` random draws of ``samples`` (each a :class:`Distribution` or its text;
    drawn with ``numpy.random.default_rng(sample_seed)``, in the order of the keys). ValueError
    (one line) where the sweep cannot be one program: a key that is not a config field, a static
    field (it shapes the compiled program), an empty grid, a value the field refuses, samples
    without a count, a key both in the grid and sampled."""
    grid = {k: [float(v) for v in vs] for k, vs in (grid or {}).items()}
    samples = {k: d if isinstance(d, Distribution) else parse_distribution(d)
               for k, d in (samples or {}).items()}
    if not grid and not samples:
        raise ValueError("nothing to sweep: give --grid KEY=V1,V2,... and/or --sample N KEY=DIST")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if samples and num_samples < 1:
        raise ValueError(f"--sample needs a number of samples >= 1, got {num_samples}")
    both = sorted(set(grid) & set(samples))
    if both:
        raise ValueError(f"{both[0]} is both in --grid and in --sample; choose one")
    for key, values in grid.items():
        if not values:
            raise ValueError(f"--grid {key} has no values")
    _check_traced(config, [*grid, *samples])
    rng = np.random.default_rng(sample_seed)
    drawn = {k: d.sample(rng, num_samples) for k, d in samples.items()}
    points = []
    for values in itertools.product(*grid.values()):
        base = dict(zip(grid, values))
        if not samples:
            points.append(base)
        for i in range(num_samples if samples else 0):
            points.append({**base, **{k: float(v[i]) for k, v in drawn.items()}})
    for point in points:
        config.check_hparams(point)  # each value: the field's own checks (e.g. lr > 0)
    return Plan(config, tuple(points), seeds, seed, grid, {k: str(d) for k, d in samples.items()},
                num_samples if samples else 0, sample_seed)


def _check_traced(config: BaseConfig, keys: Sequence[str]) -> None:
    """ValueError naming the first key that is not a config field or not traced."""
    fields, traced = config.field_names(), config.hparam_names()
    for key in keys:
        if key not in fields:
            config.check_keys([key])  # unknown: names the closest key
        if key not in traced:
            raise ValueError(
                f"{key} is a static field of {config.algo} (it shapes the compiled program), so "
                f"its values need separate programs: run 'purerl sweep' once per value with "
                f"--set {key}=V; swept in one program: {', '.join(traced)}")


# ------------------------------------------------------------------------------ results

@dataclasses.dataclass(frozen=True)
class Ranked:
    """One configuration's line of a sweep's summary."""

    index: int  # the configuration's position in Plan.points
    point: dict[str, float]
    final: stats.Summary | None  # of the seeds' final eval returns; None if a seed diverged
    best_eval: float  # mean over seeds of each seed's best eval return
    diverged: list[int]  # seeds whose parameters became non-finite
    diverged_at: list[int]  # for each of them, the update after which that was seen


@dataclasses.dataclass
class SweepResult:
    """A finished sweep: ``metrics`` are ``[configurations, seeds, updates]``;
    ``diverged_at[c, s]`` the update after which run (c, s) was first seen with non-finite
    parameters (checked after every chunk), 0 for a run that stayed finite."""

    plan: Plan
    metrics: dict[str, np.ndarray]
    diverged_at: np.ndarray
    wall_s: float = 0.0

    @property
    def final_eval(self) -> np.ndarray:
        """``[configurations, seeds]``: the evaluation after the last update."""
        return self.metrics["eval_return"][:, :, -1]

    @property
    def best_eval(self) -> np.ndarray:
        """``[configurations, seeds]``: each run's best evaluation."""
        evals = self.metrics["eval_return"]
        return np.where(np.isnan(evals).all(axis=-1), np.nan,
                        np.nanmax(np.where(np.isnan(evals), -np.inf, evals), axis=-1))

    def ranking(self, reps: int = 2000) -> list[Ranked]:
        """Every configuration, best first: those with no diverged seed by the IQM of their
        final evaluations (ties by the mean), then the diverged ones by how many seeds
        diverged."""
        out = []
        for c, point in enumerate(self.plan.points):
            diverged = np.flatnonzero(self.diverged_at[c] > 0).tolist()
            finals = self.final_eval[c]
            ok = not diverged and np.isfinite(finals).all()
            out.append(Ranked(c, point, stats.summarize(finals, reps=reps, seed=c) if ok else None,
                              float(np.nanmean(self.best_eval[c])) if not np.isnan(
                                  self.best_eval[c]).all() else float("nan"),
                              diverged, [int(self.diverged_at[c, s]) for s in diverged]))
        return sorted(out, key=lambda r: (0, -r.final.iqm.value, -r.final.mean, r.index)
                      if r.final is not None else (1, len(r.diverged), r.index))

    def best(self) -> BaseConfig:
        """The full config of the top-ranked configuration; ValueError if every one diverged."""
        top = self.ranking(reps=1)[0]
        if top.final is None:
            raise ValueError("every configuration of the sweep diverged")
        return self.plan.config.replace(**top.point)


def sweep(config: BaseConfig, grid: Mapping[str, Sequence[float]] | None = None, *,
          seeds: int = 1, seed: int = 0, samples: Mapping[str, Any] | None = None,
          num_samples: int = 0, sample_seed: int = 0, chunk: int | None = None,
          placement: Any = None) -> SweepResult:
    """Train every configuration of ``grid`` / ``samples`` (:func:`make_plan`) for ``seeds``
    seeds in one compiled program (in chunks of ``chunk`` updates, default num_updates // 10;
    ``placement``: a :class:`purerl.placement.Placement` to shard the runs over devices) and
    return the :class:`SweepResult`. E.g.
    ``purerl.sweep(ppo.Config(), {"lr": [1e-3, 3e-3]}, seeds=8).ranking()``."""
    plan = make_plan(config, grid, samples=samples, num_samples=num_samples, seeds=seeds,
                     seed=seed, sample_seed=sample_seed)
    agent = purerl.get_algorithm(config.algo).make_agent(config)
    tracker = DivergenceTracker(plan.num_runs)
    start = time.perf_counter()
    run_chunked = loop.run_chunked if placement is None else placement.run_chunked
    chunks = []
    for done, state, metrics in run_chunked(
            agent, plan.keys(), hparams=plan.hparams(),
            chunk=chunk or max(1, agent.num_updates // 10), check_finite=False):
        tracker.update(state, done)
        chunks.append(jax.device_get(metrics))
    metrics = {k: np.concatenate([np.asarray(c[k]) for c in chunks], axis=1) for k in chunks[0]}
    return SweepResult(plan, by_configuration(metrics, plan), tracker.by_configuration(plan),
                       time.perf_counter() - start)


def by_configuration(metrics: Mapping[str, np.ndarray], plan: Plan) -> dict[str, np.ndarray]:
    """``[configurations * seeds, ...]`` run metrics as ``[configurations, seeds, ...]``."""
    return {k: np.asarray(v).reshape(len(plan.points), plan.seeds, *np.shape(v)[1:])
            for k, v in metrics.items()}


class DivergenceTracker:
    """Per run, the update after which its parameters were first seen non-finite (0: never)."""

    def __init__(self, runs: int, at: Sequence[int] | None = None) -> None:
        self.at = np.zeros(runs, np.int64) if at is None else np.asarray(at, np.int64)
        if self.at.shape != (runs,):
            raise ValueError(f"diverged_at has {self.at.shape} entries for {runs} runs")

    def update(self, state: Any, done: int) -> None:
        finite = loop.finite_per_seed(state.params)
        self.at[(self.at == 0) & ~finite] = done

    def by_configuration(self, plan: Plan) -> np.ndarray:
        return self.at.reshape(len(plan.points), plan.seeds)


# ----------------------------------------------------------------------- the run directory

def _fmt(point: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in point.items())


def summary_table(result: SweepResult, ranking: list[Ranked], devices: str) -> str:
    """The table ``purerl sweep`` prints and writes to summary.txt."""
    plan = result.plan
    head = [("algorithm", plan.config.algo), ("environment", plan.config.env),
            ("configurations", f"{len(plan.points)} x {plan.seeds} seed(s)"),
            ("devices", devices),
            ("env steps per run", str(int(result.metrics["env_steps"][0, 0, -1]))),
            ("wall time (incl. compile)", f"{result.wall_s:.1f} s")]
    confidence = next((r.final.iqm.confidence for r in ranking if r.final), 0.95)
    rows = []
    for rank, r in enumerate(ranking, 1):
        if r.final is None:
            rows.append(("-", str(r.index), _fmt(r.point),
                         f"diverged: {len(r.diverged)} of {plan.seeds} seed(s), first after "
                         f"update {min(r.diverged_at)}", "", "", ""))
            continue
        f = r.final
        rows.append((str(rank), str(r.index), _fmt(r.point), str(f.iqm), f"{f.mean:.4g} ± "
                     f"{f.std:.4g}", f"{f.median:.4g}", f"{r.best_eval:.4g}"))
    table = format_table(rows, ("rank", "config", "hyperparameters",
                                f"final eval IQM [{confidence:.0%} CI]", "mean ± std", "median",
                                "best eval (mean)"))
    return format_table(head) + "\n\n" + table


def write_results(run_dir: Path, result: SweepResult, devices: str) -> str:
    """Every result file of a sweep in ``run_dir`` (:data:`RESULTS` and ``sweep_KEY.png`` per
    swept hyperparameter); returns the summary table."""
    plan = result.plan
    ranking = result.ranking()
    rundir.write_json(run_dir / "metrics.json", {
        "layout": "[configuration][seed][update]",
        **{k: as_lists(v) for k, v in result.metrics.items()}})
    _write_csv(run_dir / "results.csv", result)
    confidence = next((r.final.iqm.confidence for r in ranking if r.final), 0.95)
    rundir.write_json(run_dir / "summary.json", {
        "algo": plan.config.algo, "env": plan.config.env, "seeds": plan.seeds,
        "statistic": "final deterministic eval return: IQM with a percentile stratified-"
                     f"bootstrap {confidence:.0%} interval over seeds",
        "wall_s": round(result.wall_s, 3),
        "ranking": [{"rank": i + 1 if r.final else None, "config": r.index,
                     "hyperparameters": r.point, "best_eval_mean": _num(r.best_eval),
                     "diverged_seeds": r.diverged, "diverged_after_update": r.diverged_at,
                     **({k: _num(v) for k, v in r.final.to_dict().items()} if r.final else {})}
                    for i, r in enumerate(ranking)]})
    top = ranking[0]
    if top.final is not None:
        best = plan.config.replace(**top.point)
        rundir.write_json(run_dir / "best.json", {
            **_jsonable(best.to_dict()), "algo": best.algo, "seeds": plan.seeds,
            "seed": plan.seed, "sweep_rank": 1, "sweep_config": top.index})
    else:
        rundir.write_json(run_dir / "best.json", {"algo": plan.config.algo, "best": None,
                                                  "why": "every configuration diverged"})
    for key in plan.keys_swept:
        _plot_against(run_dir / f"sweep_{key}.png", result, ranking, key)
    _plot_top_curves(run_dir / "learning_curves.png", result, ranking)
    table = summary_table(result, ranking, devices)
    rundir.write_text(run_dir / "summary.txt", table + "\n")
    return table


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _write_csv(path: Path, result: SweepResult) -> None:
    import csv

    plan = result.plan
    keys = plan.keys_swept
    steps = result.metrics["env_steps"][:, :, -1]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["config", "seed", *keys, "final_eval_return", "best_eval_return",
                          "env_steps", "diverged_after_update"])
            for c, point in enumerate(plan.points):
                for s in range(plan.seeds):
                    out.writerow([c, s, *(repr(point[k]) for k in keys),
                                  _cell(result.final_eval[c, s]), _cell(result.best_eval[c, s]),
                                  int(steps[c, s]), int(result.diverged_at[c, s]) or ""])

    rundir.write_atomic(path, write)


def _cell(x: float) -> str:
    return "" if not math.isfinite(float(x)) else repr(float(x))


def _plot_against(path: Path, result: SweepResult, ranking: list[Ranked], key: str) -> None:
    """Final-eval IQM with its interval against one swept hyperparameter (every configuration;
    diverged ones as crosses at the bottom)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ok = [r for r in ranking if r.final is not None]
    bad = [r for r in ranking if r.final is None]
    if ok:
        x = np.array([r.point[key] for r in ok])
        y = np.array([r.final.iqm.value for r in ok])
        err = np.array([[r.final.iqm.value - r.final.iqm.low for r in ok],
                        [r.final.iqm.high - r.final.iqm.value for r in ok]])
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label="IQM, 95% bootstrap CI")
    if bad:
        floor = min([r.final.iqm.low for r in ok], default=0.0)
        ax.plot([r.point[key] for r in bad], [floor] * len(bad), "rx", label="diverged")
    values = np.array([p[key] for p in result.plan.points])
    if (values > 0).all() and values.max() / values.min() > 20:
        ax.set_xscale("log")
    plan = result.plan
    ax.set(title=f"{plan.config.algo} on {plan.config.env}: final eval vs {key} "
                 f"({plan.seeds} seeds each)", xlabel=key, ylabel="final eval return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _plot_top_curves(path: Path, result: SweepResult, ranking: list[Ranked]) -> None:
    """The evaluation curves (mean over seeds, min-max band) of the top configurations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    evals = result.metrics["eval_return"]
    steps = result.metrics["env_steps"][0, 0]
    cols = ~np.isnan(evals).all(axis=(0, 1))
    for r in [r for r in ranking if r.final is not None][:TOP_CURVES]:
        y = evals[r.index][:, cols]
        line, = ax.plot(steps[cols], np.nanmean(y, axis=0), marker=".", label=_fmt(r.point))
        ax.fill_between(steps[cols], np.nanmin(y, axis=0), np.nanmax(y, axis=0), alpha=0.15,
                        color=line.get_color(), linewidth=0)
    plan = result.plan
    ax.set(title=f"{plan.config.algo} on {plan.config.env}: top configurations (mean, min-max "
                 f"over {plan.seeds} seeds)", xlabel="environment steps per run",
           ylabel="deterministic eval return")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
