"""The result files of a run directory (:data:`purerl.rundir.RESULTS`), each written atomically:
``metrics.json``, ``metrics.csv`` (long format), ``learning_curve.png`` and ``summary.txt`` (the
table the command line prints), and the plain-text tables of the command line."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from purerl import faults, rundir

__all__ = ["Metrics", "as_lists", "format_table", "plot_learning_curve", "summarize", "write",
           "write_csv"]

Metrics = dict[str, np.ndarray]  # name -> [seeds, updates]


def write(algo: str, config: Any, run_dir: Path, metrics: Metrics, wall_s: float, seeds: int,
          devices: str) -> str:
    """Every result file of the run in ``run_dir``; returns the summary table. ``devices``:
    where it ran, one line for the summary."""
    rundir.write_json(run_dir / "metrics.json", {k: as_lists(v) for k, v in metrics.items()})
    faults.pause_point("results")
    write_csv(run_dir / "metrics.csv", metrics)
    plot_learning_curve(run_dir / "learning_curve.png", metrics,
                        f"{algo} on {config.env}: mean and min-max over {seeds} seed(s)")
    rows = summarize(algo, config, metrics, wall_s)
    rows.insert(3, ("devices", devices))
    table = format_table(rows)
    rundir.write_text(run_dir / "summary.txt", table + "\n")
    return table


def as_lists(a: np.ndarray) -> list:
    """Nested lists of Python numbers; floats at their shortest round-trip repr, NaN as None."""
    if not np.issubdtype(a.dtype, np.floating):
        return a.tolist()
    flat = [None if np.isnan(v) else float(str(v)) for v in a.ravel()]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def write_csv(path: Path, metrics: Metrics) -> None:
    """Long format: one row per (seed, update), ``update`` counted from 0; NaN is empty.
    Written atomically: a full disk never leaves a file cut mid-row."""
    names = sorted(k for k in metrics if k != "env_steps")
    columns = [as_lists(metrics[k]) for k in ("env_steps", *names)]
    seeds, updates = metrics["env_steps"].shape

    def write_rows(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seed", "update", "env_steps", *names])
            for s in range(seeds):
                for u in range(updates):
                    writer.writerow([s, u, *("" if c[s][u] is None else c[s][u]
                                             for c in columns)])

    rundir.write_atomic(path, write_rows)


def plot_learning_curve(path: Path, metrics: Metrics, title: str) -> None:
    """Mean over seeds with a min-max band of training-episode and eval returns vs env steps
    (eval points also get min-max whiskers, since a band is invisible with one point)."""
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    steps = metrics["env_steps"][0]
    for name, label in (("episode_return", "training episodes"),
                        ("eval_return", "deterministic eval")):
        y = metrics.get(name)
        cols = None if y is None else ~np.isnan(y).all(axis=0)  # updates with a value
        if cols is None or not cols.any():
            continue
        x, y = steps[cols], y[:, cols]
        mean, low, high = np.nanmean(y, axis=0), np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        line, = ax.plot(x, mean, label=label)
        ax.fill_between(x, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
        if name == "eval_return":
            ax.errorbar(x, mean, yerr=(mean - low, high - mean), fmt="o", markersize=3,
                        capsize=3, color=line.get_color())
    ax.set(title=title, xlabel="environment steps (per seed)", ylabel="return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _mean(x: np.ndarray) -> str:
    """NaN-ignoring mean to 4 significant digits; ``n/a`` when there is no value."""
    x = np.asarray(x, np.float64)
    return "n/a" if np.isnan(x).all() else f"{np.nanmean(x):.4g}"


def summarize(algo: str, config: Any, metrics: Metrics, wall_s: float) -> list[tuple[str, str]]:
    """The rows of the end-of-run summary table."""
    seeds, updates = metrics["env_steps"].shape
    final_eval = metrics["eval_return"][:, -1]  # the last update is always evaluated
    tail = metrics["episode_return"][:, -max(1, updates // 10):]
    rows = [
        ("algorithm", algo),
        ("environment", config.env),
        ("seeds", str(seeds)),
        ("env steps per seed", str(int(metrics["env_steps"][0, -1]))),
        ("updates", str(updates)),
        ("wall time (incl. compile)", f"{wall_s:.1f} s"),
        ("final eval return", f"{_mean(final_eval)} ± {final_eval.std():.4g}"),
        ("best eval return", _mean(np.nanmax(metrics["eval_return"], axis=1))),
        ("final episode return (last 10%)", _mean(tail)),
    ]
    shown = {"env_steps", "eval_return", "episode_return"}
    rows += [(f"final {k}", _mean(metrics[k][:, -1])) for k in sorted(set(metrics) - shown)]
    return rows


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned plain-text columns, with a rule under the header if there is one."""
    table = ([list(header)] if header else []) + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
