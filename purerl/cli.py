"""Command line: ``purerl train ALGO --env ENV ...``, ``purerl resume RUN_DIR``, ``purerl eval
RUN_DIR`` and ``purerl list``.

``train`` runs ``--seeds`` vmapped seeds in compiled chunks with a progress bar, saves
checkpoints (:mod:`purerl.checkpoint`) every ``--checkpoint-every`` updates and after the last,
then writes ``config.json``, ``metrics.json``, ``metrics.csv``, ``learning_curve.png`` and
``summary.txt`` to ``<out>/<name>/`` and prints the summary table; ``--log`` also logs every
chunk to TensorBoard or wandb (:mod:`purerl.loggers`). ``resume`` continues a run from its
newest checkpoint and rewrites those files; ``eval`` runs episodes of a saved policy and with
``--gif`` draws one (:mod:`purerl.render`).
Bad input (unknown algorithm, environment or config key, unparsable or invalid value, a missing,
corrupt or mismatched checkpoint, a run too large for the memory, a ``--name`` that is taken or
not one directory name) prints one ``purerl: error: ...`` line and exits 2, before anything is
compiled or written. A run whose parameters become non-finite stops after that chunk with one
line naming the update and exits 3 (its checkpoints are all finite). An OS error (a full disk, a
read-only directory) exits 4 and a run directory in use by another process 5; SIGINT and
SIGTERM exit 130 and 143. Each says in one line where the run stands: whatever stops the
process, its run directory is finished, resumable or free (:mod:`purerl.rundir`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import sys
import textwrap
import time
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

import jax
import numpy as np
from tqdm import tqdm

import purerl
from purerl import checkpoint, distributed, loggers, loop, rundir, signals
from purerl import config as config_lib

Metrics = dict[str, np.ndarray]  # name -> [seeds, updates]

_TRUE, _FALSE = {"true", "1", "yes", "y", "on"}, {"false", "0", "no", "n", "off"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``purerl: error: <message>`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"purerl: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------ --set key=value


def parse_value(text: str, annotation: Any) -> Any:
    """Parse ``text`` as a value of a config field whose resolved annotation is ``annotation``
    (``int``, ``float``, ``bool``, ``str`` or ``tuple[int, ...]``); ValueError if it does not
    parse."""
    text = text.strip()
    if annotation is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected true/false, got {text!r}")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"expected {annotation.__name__}, got {text!r}") from None
    if typing.get_origin(annotation) is tuple:
        element = typing.get_args(annotation)[0]
        items = [s for s in text.strip("()[] ").split(",") if s.strip()]
        return tuple(parse_value(s, element) for s in items)
    return text  # str (and anything unforeseen: the Config's own checks judge it)


def parse_overrides(pairs: Sequence[str], config_cls: type) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: typed value}`` by ``config_cls``'s field types.

    Unknown keys are passed through as strings so ``Config.from_dict`` names the closest key.
    """
    types = config_cls.field_types()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in types:
            out[key] = text
            continue
        try:
            out[key] = parse_value(text, types[key])
        except ValueError as e:
            raise ValueError(f"--set {key}: {e}") from None
    return out


# ------------------------------------------------------------------------------- training


def train(agent: loop.Agent, keys: jax.Array | None, chunk: int, *, state: Any = None,
          align: int | None = None,
          on_chunk: Callable[[int, Any, list[Metrics]], None] | None = None,
          placement: Any = None) -> Metrics:
    """Run all seeds in chunks of ``chunk`` updates with a progress bar; metrics are
    ``[seeds, updates]`` numpy arrays of the updates run here. ``state``: continue from this
    state (:func:`purerl.loop.run_chunked`); ``align``: chunk boundaries on its multiples;
    ``on_chunk(updates_done, state, chunks)`` is called after every chunk (``chunks``: the
    metrics of the chunks so far)."""
    chunks: list[Metrics] = []
    postfix: dict[str, str] = {}
    start = 0 if state is None else loop.updates_done(state)
    with tqdm(total=agent.num_updates, initial=start, unit="update", disable=None,
              dynamic_ncols=True) as bar:
        # placement (purerl.distributed.Placement, --devices): where the chunks run
        run_chunked = loop.run_chunked if placement is None else placement.run_chunked
        for done, state, metrics in run_chunked(agent, keys, chunk=chunk, state=state,
                                                align=align):
            chunks.append({k: np.asarray(v) for k, v in jax.device_get(metrics).items()})
            if on_chunk is not None:
                on_chunk(done, state, chunks)
            for name, short in (("eval_return", "eval"), ("episode_return", "episode")):
                latest = _latest_mean(chunks[-1].get(name))
                if latest is not None:
                    postfix[short] = f"{latest:.1f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(done - bar.n)
    return _concat(chunks)


def _concat(chunks: Sequence[Metrics]) -> Metrics:
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


# -------------------------------------------------------------------------------- outputs


def as_lists(a: np.ndarray) -> list:
    """Nested lists of Python numbers; floats at their shortest round-trip repr, NaN as None."""
    if not np.issubdtype(a.dtype, np.floating):
        return a.tolist()
    flat = [None if np.isnan(v) else float(str(v)) for v in a.ravel()]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (:func:`purerl.rundir.write_atomic`)."""
    rundir.write_text(path, json.dumps(obj, indent=1) + "\n")


def write_csv(path: Path, metrics: Metrics) -> None:
    """Long format: one row per (seed, update), ``update`` counted from 0; NaN is empty.
    Written atomically: a full disk never leaves a file cut mid-row."""
    names = sorted(k for k in metrics if k != "env_steps")
    columns = [as_lists(metrics[k]) for k in ("env_steps", *names)]
    seeds, updates = metrics["env_steps"].shape

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seed", "update", "env_steps", *names])
            for s in range(seeds):
                for u in range(updates):
                    writer.writerow([s, u, *("" if c[s][u] is None else c[s][u]
                                             for c in columns)])

    rundir.write_atomic(path, write)


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


# ------------------------------------------------------------------------------- commands


def _setup(args: argparse.Namespace) -> tuple[Any, loop.Agent, Path, str | None]:
    """Validate everything before compiling: ``--seed``, ``--name``, the config (the
    environment's preset unless ``--no-preset``, then ``--set`` and ``--total-timesteps`` on
    top; a flag and a ``--set`` of the same field must agree), the agent, its memory estimate
    for ``--seeds`` seeds (:mod:`purerl.memory`) and the run directory, which must not hold a
    run yet. Returns them with the preset's name (None when none was used)."""
    from purerl import memory, presets

    module = purerl.get_algorithm(args.algo)
    config_lib.check_seed(args.seed, "--seed")
    if args.name is not None:
        _check_name(args.name)
    set_values = parse_overrides(args.set, module.Config)
    env = _agree("--env", args.env, "env", set_values) or purerl.ALGORITHMS[args.algo][2]
    total = _agree("--total-timesteps", args.total_timesteps, "total_timesteps", set_values)
    preset = None if args.no_preset else presets.lookup(args.algo, env)
    overrides = {**(preset.overrides if preset else {}), **set_values, "env": env}
    if total is not None:
        overrides["total_timesteps"] = total
    config = module.Config.from_dict(overrides)
    agent = module.make_agent(config)
    eval_note = None
    if "eval_every" not in set_values:
        config, eval_note = _enough_evaluations(config, agent.num_updates)
        if eval_note:
            agent = module.make_agent(config)
    memory.check(agent, args.seeds, what=f"{args.algo} on {config.env}", seeds_name="--seeds")
    run_dir = _new_run_dir(Path(args.out), args.name, args.algo, config.env)
    if args.no_preset:
        print("--no-preset: the defaults of the config", file=sys.stderr)
    elif preset is None:
        print(f"no {args.algo} preset for {env}: the defaults, tuned for "
              f"{purerl.ALGORITHMS[args.algo][2]} ('purerl list --presets' lists the presets)",
              file=sys.stderr)
    else:
        measured = preset.measured
        print(f"preset {preset.name}" + (f" (reaches {measured.summary()})" if measured else "")
              + ("; --set / --total-timesteps override it" if args.set or args.total_timesteps
                 else ""), file=sys.stderr)
        if preset.caveat:
            print(f"note: {preset.caveat}", file=sys.stderr)
    if eval_note:
        print(eval_note, file=sys.stderr)
    return config, agent, run_dir, preset.name if preset else None


MIN_EVALUATIONS = 10  # a CLI run evaluates at least this often unless --set eval_every says


def _enough_evaluations(config: Any, num_updates: int) -> tuple[Any, str | None]:
    """``config`` with ``eval_every`` lowered so the run evaluates about
    :data:`MIN_EVALUATIONS` times along the way (a preset's interval is chosen for its own
    budget, so a shorter ``--total-timesteps`` would otherwise evaluate only after the last
    update), and the note saying so; unchanged (note None) when it already does."""
    every = config.eval_every
    if every and num_updates // every >= MIN_EVALUATIONS:
        return config, None
    new = max(1, num_updates // MIN_EVALUATIONS)
    if new == every:
        return config, None
    was = "only after the last update" if not every else \
        f"{num_updates // every} time(s) along the way"
    return config.replace(eval_every=new), (
        f"evaluating every {new} updates ({num_updates // new} evaluations): eval_every="
        f"{every} would evaluate {was} in these {num_updates} updates (--set eval_every=N "
        "chooses)")


def _agree(flag: str, value: Any, key: str, set_values: dict[str, Any]) -> Any:
    """``value`` of ``flag`` or else ``--set key=``'s; ValueError if both are given and differ
    (neither silently wins)."""
    if value is not None and key in set_values and set_values[key] != value:
        raise ValueError(f"{flag} {value} and --set {key}={set_values[key]} disagree; give "
                         "only one of them")
    return value if value is not None else set_values.get(key)


def _check_name(name: str) -> None:
    """ValueError unless ``name`` is one directory name: ``--out`` says where runs go, and a
    name with a path in it (``../x``, ``a/b``, ``/tmp/x``) would write elsewhere."""
    if name in ("", ".", "..") or Path(name).name != name or "\0" in name:
        raise ValueError(f"--name {name!r} must be a single directory name (no '/', '.' or "
                         "'..'): the run goes to OUT/NAME; choose OUT with --out")


# what a run directory holds once 'purerl train' has used it
RUN_OUTPUTS = ("config.json", *rundir.RESULTS, checkpoint.CHECKPOINTS, "tensorboard", "wandb")


def _new_run_dir(out: Path, name: str | None, algo: str, env: str) -> Path:
    """``out/name``, refused if it holds a run already (runs are never overwritten); without a
    name ``out/ALGO_ENV_TIMESTAMP``, with ``_2``, ``_3``, ... appended while that is taken."""
    if name is None:
        base = f"{algo}_{env.replace('/', '_')}_{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir, n = out / base, 1
        while _taken(run_dir):
            n += 1
            run_dir = out / f"{base}_{n}"
        return run_dir
    run_dir = out / name
    _check_free(run_dir, name)
    return run_dir


def _check_free(run_dir: Path, name: str) -> None:
    """ValueError unless ``run_dir`` is free for ``--name``: no checkpoint, no result file. A
    directory left by a run that stopped before its first checkpoint (only its config.json,
    perhaps logger files) is free: nothing of it could be resumed."""
    newest = checkpoint.latest(run_dir)
    if newest is not None:  # never mix two runs' checkpoints (resume would pick the wrong one)
        raise ValueError(f"{run_dir} already holds checkpoints of a run (the newest after "
                         f"{newest.name} updates); continue it with 'purerl resume {run_dir}', "
                         f"or train under another --name (or delete "
                         f"{run_dir / checkpoint.CHECKPOINTS})")
    results = [n for n in rundir.RESULTS if (run_dir / n).exists()]
    if results:
        raise ValueError(f"--name {name}: {run_dir} already holds a run ({', '.join(results)}); "
                         "runs are never overwritten: train under another --name or delete it")


def _taken(run_dir: Path) -> list[str]:
    """The outputs of an earlier run in ``run_dir`` (empty if none)."""
    return [n for n in RUN_OUTPUTS if (run_dir / n).exists()]


def _fail(message: str, code: int = 2) -> int:
    print(f"purerl: error: {' '.join(message.split())}", file=sys.stderr)
    return code


EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OS_ERROR, EXIT_BUSY = 2, 3, 4, 5


def _os_error_text(error: OSError) -> str:
    """An OSError as ``PATH: cause`` (``cause`` alone when it names no path)."""
    cause = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {cause}" if error.filename else cause


def _standing(run_dir: Path, num_updates: int | None = None) -> str:
    """Where an interrupted or failed run stands and how to go on (one clause)."""
    newest = checkpoint.latest(run_dir)
    if newest is None:
        return (f"no checkpoint was saved; 'purerl resume {run_dir}' trains the run again from "
                f"the start (or 'purerl train ... --name {run_dir.name}' reuses the directory)")
    if num_updates is not None and int(newest.name) >= num_updates:
        return (f"training finished and its final checkpoint {newest} is saved; 'purerl resume "
                f"{run_dir}' writes the missing results")
    return (f"the newest checkpoint is {newest} ({newest.name} updates); continue with "
            f"'purerl resume {run_dir}'")


# keys of config.json besides the config's fields: the run's options
RUN_KEYS = ("algo", "seeds", "seed", "preset", "chunk", "checkpoint_every", "keep", "log",
            "wandb_id", "devices", "data_parallel")


def _write_config(run_dir: Path, algo: str, config: Any, seeds: int, seed: int | None,
                  preset: str | None, chunk: int | None, every: int | None, keep: int,
                  log: Sequence[str] = (), wandb_id: str | None = None,
                  devices: int | str | None = None, data_parallel: bool = False) -> None:
    write_json(run_dir / "config.json",
               {**config.to_dict(), "algo": algo, "seeds": seeds, "seed": seed,
                "preset": preset, "chunk": chunk, "checkpoint_every": every, "keep": keep,
                "log": list(log), "wandb_id": wandb_id, "devices": devices,
                "data_parallel": data_parallel})


def _log_kinds(requested: Sequence[str] | None, saved: Sequence[str] = ()) -> list[str]:
    """The loggers of ``--log`` (``none`` turns them off; not given: ``saved``), checked."""
    kinds = list(saved) if requested is None else [k for k in requested if k != "none"]
    loggers.check(kinds)
    return list(dict.fromkeys(kinds))


def _chunk_length(agent: loop.Agent, chunk: int | None, every: int | None) -> int:
    """The chunk length run_chunked will use (so the messages are true): about ``chunk``
    updates (default num_updates // 50), a divisor of ``every`` where one is near."""
    requested = chunk or max(1, agent.num_updates // 50)
    return loop.even_chunk(agent.num_updates, requested, every)


def _train_and_write(algo: str, config: Any, agent: loop.Agent, run_dir: Path, *,
                     keys: jax.Array | None = None, resumed: Any = None, seeds: int,
                     seed: int | None, chunk: int, every: int | None, keep: int,
                     log: Sequence[str] = (), placement: Any = None) -> int:
    """Train (from ``keys``, or on from the restored run ``resumed``) with a checkpoint every
    ``every`` updates and after the last, logging every chunk to the ``log`` loggers
    (:mod:`purerl.loggers`), then write the metrics (the restored ones followed by the new),
    the learning curve and the summary. The caller holds the run directory's lock."""
    old = resumed.metrics if resumed is not None else {}
    wall_before = float(resumed.metadata["extra"].get("wall_s", 0.0)) if resumed else 0.0
    sinks = _open_loggers(log, run_dir, seeds, resumed)
    start = time.perf_counter()

    def after_chunk(done: int, state: Any, chunks: list[Metrics]) -> None:
        for sink in sinks:
            sink.write(chunks[-1], done - chunks[-1]["env_steps"].shape[1])
        if done == agent.num_updates or (every and done % every == 0):
            wall = wall_before + time.perf_counter() - start
            checkpoint.save(run_dir, config, state, _concat([old, *chunks]), seed=seed,
                            keep=keep, extra={"wall_s": round(wall, 3)})
        rundir.pause_point("chunk")

    rundir.pause_point("start")  # config.json is written, nothing compiled yet
    try:
        new = train(agent, keys, chunk, state=None if resumed is None else resumed.state,
                    align=every, on_chunk=after_chunk, placement=placement)
    finally:
        for sink in sinks:
            sink.close()
    wall_s = wall_before + time.perf_counter() - start
    rundir.pause_point("trained")  # the final checkpoint is saved, no result file yet
    _write_results(algo, config, run_dir, _concat([old, new]), wall_s, seeds, placement)
    return 0


def _write_results(algo: str, config: Any, run_dir: Path, metrics: Metrics, wall_s: float,
                   seeds: int, placement: Any = None) -> None:
    """The result files (:data:`purerl.rundir.RESULTS`), each written atomically, and the
    summary table on stdout."""
    write_json(run_dir / "metrics.json", {k: as_lists(v) for k, v in metrics.items()})
    rundir.pause_point("results")
    write_csv(run_dir / "metrics.csv", metrics)
    plot_learning_curve(run_dir / "learning_curve.png", metrics,
                        f"{algo} on {config.env}: mean and min-max over {seeds} seed(s)")
    rows = summarize(algo, config, metrics, wall_s)
    rows.insert(3, ("devices", (placement or distributed.Placement()).describe(config, seeds)))
    table = format_table(rows)
    rundir.write_text(run_dir / "summary.txt", table + "\n")
    print(table)
    print(f"run directory: {run_dir}")


def _open_loggers(kinds: Sequence[str], run_dir: Path, seeds: int, resumed: Any
                  ) -> list[loggers.Logger]:
    """The run's loggers; a resumed run continues its wandb run (the id in config.json) and
    purges what TensorBoard holds past the checkpoint; a run trained from the start in a
    directory that holds TensorBoard files of an earlier attempt purges all of them. A new
    wandb id goes into config.json."""
    if not kinds:
        return []
    saved = _read_run_config(run_dir) or {}
    purge = 0 if (run_dir / "tensorboard").exists() else None
    if resumed is not None:
        purge = int(np.asarray(resumed.state.run.env_steps).reshape(-1)[0]) + 1
    sinks = loggers.make(kinds, run_dir, seeds, saved, wandb_id=saved.get("wandb_id"),
                         purge_step=purge)
    for sink in sinks:
        if isinstance(sink, loggers.WandbLogger) and sink.id != saved.get("wandb_id"):
            write_json(run_dir / "config.json", {**saved, "wandb_id": sink.id})
    return sinks


def _checkpoint_note(every: int | None, keep: int) -> str:
    return (f"a checkpoint every {every} updates and after the last" if every
            else "a checkpoint after the last update") + f" (keeping the newest {keep})"


def _eval_note(agent: loop.Agent) -> str:
    n, every = agent.num_updates, agent.eval_every
    if not every or every >= n:
        return "evaluating after the last update"
    return f"evaluating every {every} updates and after the last"


def _import_what_training_imports() -> None:
    """Import the modules a run imports later (checkpoints, the learning curve) while a signal
    still ends the process on the spot (:func:`purerl.signals.install`): an interrupt raised
    into an import can be swallowed by a library's bare ``except``."""
    import matplotlib.figure  # noqa: F401
    import orbax.checkpoint  # noqa: F401


def _guarded(run_dir: Path, config: Any, num_updates: int, body: Callable[[], int]) -> int:
    """``body()``, with everything that can stop it reported in one line naming where the run
    stands (:func:`_standing`): divergence (exit 3), an OS error such as a full disk or a
    read-only directory (exit 4), SIGINT / SIGTERM (exit 128 + the signal's number)."""
    try:
        return body()
    except loop.DivergenceError as e:
        return _diverged(e, config, run_dir)
    except KeyboardInterrupt as e:
        print(f"purerl: interrupted ({signals.name(e)}); {_standing(run_dir, num_updates)}",
              file=sys.stderr)
        return signals.exit_code(e)
    except OSError as e:
        return _fail(f"{_os_error_text(e)}; {_standing(run_dir, num_updates)}", EXIT_OS_ERROR)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        log = _log_kinds(args.log)
        devices, data_parallel = getattr(args, "devices", None), getattr(args, "data_parallel",
                                                                          False)
        distributed.device_count(devices)  # before the run directory is made
        config, agent, run_dir, preset = _setup(args)
        placement = distributed.placement(devices, data_parallel, config)
        agent = placement.agent(config, agent)
    except (ValueError, OSError) as e:  # unknown algo/env/key, bad value, unwritable --out
        return _fail(str(e))
    with contextlib.ExitStack() as stack:
        try:
            _import_what_training_imports()
            run_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(rundir.lock(run_dir, f"training {args.algo}"))
            stack.enter_context(signals.interrupting())
            if args.name is not None:  # again, now that no other process can be writing it
                _check_free(run_dir, args.name)
            reused = [n for n in RUN_OUTPUTS if (run_dir / n).exists()]
            _write_config(run_dir, args.algo, config, args.seeds, args.seed, preset, args.chunk,
                          args.checkpoint_every, args.keep, log, None, devices, data_parallel)
        except rundir.RunDirBusy as e:
            return _fail(str(e), EXIT_BUSY)
        except OSError as e:
            return _fail(f"{_os_error_text(e)}; nothing was trained", EXIT_OS_ERROR)
        except ValueError as e:
            return _fail(str(e))
        if reused:
            print(f"{run_dir} held a run that stopped before its first checkpoint "
                  f"({', '.join(reused)}): training anew there", file=sys.stderr)
        chunk = _chunk_length(agent, args.chunk, args.checkpoint_every)
        print(f"training {args.algo} on {config.env}: {args.seeds} seed(s) x "
              f"{agent.num_updates} updates, {chunk} per compiled call, {_eval_note(agent)}, "
              f"{_checkpoint_note(args.checkpoint_every, args.keep)} -> {run_dir}",
              file=sys.stderr)
        if placement.mesh is not None:
            print(f"devices: {placement.describe(config, args.seeds)}", file=sys.stderr)
        return _guarded(run_dir, config, agent.num_updates, lambda: _train_and_write(
            args.algo, config, agent, run_dir,
            keys=jax.random.split(jax.random.key(args.seed), args.seeds), seeds=args.seeds,
            seed=args.seed, chunk=chunk, every=args.checkpoint_every, keep=args.keep, log=log,
            placement=placement if placement.mesh is not None else None))


def _diverged(error: loop.DivergenceError, config: Any, run_dir: Path) -> int:
    """Report a diverged run in one line (what, the likely fix, the newest checkpoint, which
    is finite: run_chunked never yields a non-finite state to be saved); exit code 3."""
    fields = config.field_names()
    lrs = [f"{n}={getattr(config, n):g}" for n in ("lr", "actor_lr", "critic_lr", "vf_lr",
                                                    "alpha_lr") if n in fields]
    fixes = [f"lower the learning rate ({', '.join(lrs)})"] if lrs else []
    if "max_grad_norm" in fields:
        fixes.append(f"clip gradients harder (max_grad_norm={config.max_grad_norm:g})")
    if not config.normalize_obs:
        fixes.append("normalise observations (--set normalize_obs=true)")
    fix = ", ".join(fixes[:-1]) + (" or " if len(fixes) > 1 else "") + fixes[-1]
    newest = checkpoint.latest(run_dir)
    kept = (f"the newest checkpoint {newest} (after update {newest.name}) is finite"
            if newest is not None else "no checkpoint was saved before it")
    print(f"purerl: error: {error.what}; likely fix: {fix}; {kept}", file=sys.stderr)
    return EXIT_DIVERGED


def _read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's config.json (None if it has none); ValueError if unreadable."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({e}); restore it, or delete it to resume with "
                         "the config saved in the checkpoint") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a JSON object; restore it, or delete it to resume with "
                         "the config saved in the checkpoint")
    return saved


@dataclasses.dataclass
class _Resume:
    """What ``purerl resume`` found: the run's config.json (as saved, or rebuilt from the
    checkpoint), its algorithm and config, and the restored run -- None for a run that stopped
    before its first checkpoint, which is trained again from the start."""

    saved: dict[str, Any]
    algo: str
    config: Any
    run: Any  # checkpoint.LoadedRun | None
    seeds: int
    seed: int | None


def _plan_resume(run_dir: Path, total_timesteps: int | None) -> _Resume:
    """Everything ``purerl resume`` checks before it writes: its newest checkpoint (verified),
    config.json against it and the new budget; without a checkpoint, config.json alone."""
    ckpt = checkpoint.latest(run_dir)
    saved = _read_run_config(run_dir)
    if ckpt is None:
        if saved is None:
            checkpoint.find(run_dir)  # raises the CheckpointError that says what is missing
        return _plan_restart(run_dir, saved, total_timesteps)
    meta = checkpoint.read_metadata(ckpt, verify=False)  # the files: in restore
    if saved is None:
        saved = {**meta["config"], "algo": meta["algo"], "seeds": meta["num_seeds"],
                 "seed": meta["seed"], "preset": None}
    algo = saved.get("algo", meta["algo"])
    if algo != meta["algo"]:
        raise checkpoint.CheckpointError(
            f"{run_dir / 'config.json'} says algo {algo!r} but the checkpoints of {run_dir} are "
            f"of a {meta['algo']} run; set \"algo\": \"{meta['algo']}\" again (checkpoints "
            "of another run were copied here?)")
    config = _config_from_saved(run_dir, meta["algo"], saved, total_timesteps)
    run = checkpoint.restore(ckpt, config)
    return _Resume(saved, run.algo, run.config, run, run.num_seeds, run.seed)


def _config_from_saved(run_dir: Path, algo: str, saved: dict[str, Any],
                       total_timesteps: int | None) -> Any:
    module = purerl.get_algorithm(algo)
    fields = {k: v for k, v in saved.items() if k not in RUN_KEYS}
    if total_timesteps is not None:
        fields["total_timesteps"] = total_timesteps
    try:
        return module.Config.from_dict(fields)
    except ValueError as e:
        raise ValueError(f"{run_dir / 'config.json'}: {e}") from None


def _plan_restart(run_dir: Path, saved: dict[str, Any], total_timesteps: int | None
                  ) -> _Resume:
    """A run that stopped before its first checkpoint, from its config.json."""
    algo, seeds, seed = saved.get("algo"), saved.get("seeds"), saved.get("seed")
    if algo not in purerl.ALGORITHMS:
        raise ValueError(f"{run_dir / 'config.json'} names no algorithm purerl has (algo="
                         f"{algo!r}); train the run again with 'purerl train'")
    if not isinstance(seeds, int) or seeds < 1 or not isinstance(seed, int):
        raise ValueError(f"{run_dir / 'config.json'} lacks a valid seeds / seed (seeds={seeds!r}"
                         f", seed={seed!r}); train the run again with 'purerl train'")
    config_lib.check_seed(seed, "seed in config.json")
    config = _config_from_saved(run_dir, algo, saved, total_timesteps)
    return _Resume(saved, algo, config, None, seeds, seed)


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if (run_dir / checkpoint.METADATA).is_file():
        return _fail(f"{run_dir} is a checkpoint; pass its run directory {run_dir.parent.parent} "
                     "(resume continues from the newest checkpoint; delete newer ones to go "
                     "back)")
    with contextlib.ExitStack() as stack:
        # everything is checked before the lock is taken (a refused resume writes nothing),
        # and again under it if another process saved a checkpoint meanwhile
        try:
            plan = _plan_resume(run_dir, args.total_timesteps)
            refusal = _nothing_to_resume(run_dir, plan)
            if refusal:
                return _fail(refusal)
            _import_what_training_imports()
            stack.enter_context(rundir.lock(run_dir, "resuming"))
            stack.enter_context(signals.interrupting())
            if checkpoint.latest(run_dir) != (plan.run.path if plan.run else None):
                plan = _plan_resume(run_dir, args.total_timesteps)
            saved, run, config = plan.saved, plan.run, plan.config
            log = _log_kinds(args.log, saved.get("log") or ())
            given = args.devices is not None or args.data_parallel
            devices = args.devices if given else saved.get("devices")
            data_parallel = args.data_parallel if given else bool(saved.get("data_parallel"))
            placement = distributed.placement(devices, data_parallel, config)
            module = purerl.get_algorithm(plan.algo)
            agent = placement.agent(config, run.agent if run else module.make_agent(config))
        except rundir.RunDirBusy as e:
            return _fail(str(e), EXIT_BUSY)
        except OSError as e:
            return _fail(_os_error_text(e), EXIT_OS_ERROR)
        except ValueError as e:  # CheckpointError is a ValueError
            return _fail(str(e))
        done = run.updates_done if run else 0
        mesh_placement = placement if placement.mesh is not None else None
        if run is not None and done >= agent.num_updates:
            # trained to the end, stopped before (or while) writing its results
            missing = rundir.missing_results(run_dir)
            print(f"{run_dir} finished training ({done} updates; checkpoint {run.path}); "
                  f"writing its missing results ({', '.join(missing)})", file=sys.stderr)
            wall = float(run.metadata["extra"].get("wall_s", 0.0))
            return _guarded(run_dir, config, agent.num_updates, lambda: _write_results(
                plan.algo, config, run_dir, run.metrics, wall, plan.seeds, mesh_placement) or 0)
        every = args.checkpoint_every or saved.get("checkpoint_every")
        keep = args.keep or saved.get("keep") or 3
        chunk_arg = args.chunk or saved.get("chunk")
        chunk = _chunk_length(agent, chunk_arg, every)
        try:
            _write_config(run_dir, plan.algo, config, plan.seeds, plan.seed, saved.get("preset"),
                          chunk_arg, every, keep, log,
                          saved.get("wandb_id") if run else None, devices, data_parallel)
        except OSError as e:
            return _fail(f"{_os_error_text(e)}; {_standing(run_dir, agent.num_updates)}",
                         EXIT_OS_ERROR)
        if run is None:
            print(f"{run_dir} stopped before its first checkpoint: training {plan.algo} on "
                  f"{config.env} again from the start ({plan.seeds} seed(s) from seed "
                  f"{plan.seed}, the same keys), {chunk} per compiled call, "
                  f"{_checkpoint_note(every, keep)}", file=sys.stderr)
            keys = jax.random.split(jax.random.key(plan.seed), plan.seeds)
        else:
            extended = config.total_timesteps != run.metadata["config"]["total_timesteps"]
            print(f"resuming {plan.algo} on {config.env} from {run.path}: {plan.seeds} seed(s) "
                  f"at update {done} of {agent.num_updates}"
                  + (f" (budget changed to total_timesteps={config.total_timesteps})"
                     if extended else "")
                  + f", {chunk} per compiled call, {_checkpoint_note(every, keep)}",
                  file=sys.stderr)
            keys = None
        return _guarded(run_dir, config, agent.num_updates, lambda: _train_and_write(
            plan.algo, config, agent, run_dir, keys=keys, resumed=run, seeds=plan.seeds,
            seed=plan.seed, chunk=chunk, every=every, keep=keep, log=log,
            placement=mesh_placement))


def _nothing_to_resume(run_dir: Path, plan: _Resume) -> str | None:
    """Why ``purerl resume`` has nothing to do (None where it has): a run trained to the end of
    its budget with every result file written, or one with every result file but no
    checkpoint left to continue from."""
    if rundir.missing_results(run_dir):
        return None
    if plan.run is None:
        return (f"nothing to resume: {run_dir} is finished (all its result files are written) "
                "and holds no checkpoint to continue from")
    num_updates = plan.run.agent.num_updates
    if plan.run.updates_done < num_updates:
        return None
    return (f"nothing to resume: {run_dir} has done all {num_updates} updates of "
            f"total_timesteps={plan.config.total_timesteps} and written its results; pass "
            "--total-timesteps with a larger budget to extend it")


def cmd_eval(args: argparse.Namespace) -> int:
    from purerl import render

    try:
        if args.seed is not None:
            config_lib.check_seed(args.seed, "--seed")
        run = checkpoint.load(args.run_dir)
        if args.gif is not None:
            render.check_renderable(run.config.env)
            if not -run.num_seeds <= args.gif_seed < run.num_seeds:
                raise ValueError(f"--gif-seed {args.gif_seed} is not one of the run's "
                                 f"{run.num_seeds} seeds")
            if not Path(args.gif).resolve().parent.is_dir():
                raise ValueError(f"--gif {args.gif}: no directory {Path(args.gif).parent}")
    except (ValueError, OSError) as e:
        return _fail(str(e))
    key = None if args.seed is None else jax.random.key(args.seed)
    returns = run.evaluate(args.episodes, key, deterministic=not args.stochastic)
    episodes = returns.shape[1]
    policy = "stochastic" if args.stochastic else "deterministic"
    keys = ("the trainer's evaluation keys" if args.seed is None
            else f"keys split from --seed {args.seed}")
    steps = int(np.asarray(run.state.run.env_steps).reshape(-1)[0])
    print(f"{run.algo} on {run.config.env}, checkpoint {run.path} ({run.updates_done} updates, "
          f"{steps} env steps per seed): {policy} policy, {episodes} episode(s) per seed, {keys}")
    rows = [(str(i), f"{r.mean():.4g} ± {r.std():.4g}") for i, r in enumerate(returns)]
    means = returns.mean(axis=1)
    rows.append(("all", f"{means.mean():.4g} ± {means.std():.4g} (mean ± std of the seeds' "
                        "means)"))
    print(format_table(rows, header=("seed", "return (mean ± std)")))
    if args.gif is not None:
        recording = run.record_episode(args.gif_seed, args.episodes, key, not args.stochastic)
        from purerl import envs

        frames = render.save_gif(envs.make(run.config.env), recording, args.gif)
        print(f"{args.gif}: seed {args.gif_seed}'s first episode, {frames} steps, return "
              f"{returns[args.gif_seed, 0]:.4g}")
    return 0


def _env_group(env_id: str) -> str:
    if env_id.startswith("Probe"):
        return "probes"
    if env_id.startswith("playground/"):
        return "MuJoCo Playground (mujoco extra)"
    suffix = env_id.rsplit("-", 1)[-1]
    return "classic control" if re.fullmatch(r"v\d+", suffix) else suffix


def config_help(algo: str) -> str:
    """The table of ``algo``'s config fields: name, type, default, static or traced, help."""
    module = purerl.get_algorithm(algo)
    rows = [(name, type_name, default, kind, help_text)
            for name, type_name, default, kind, help_text in module.Config.describe()]
    return (f"{algo} config fields (set with --set KEY=VALUE; traced ones can also be swept "
            "with jax.vmap):\n" + format_table(rows, header=("field", "type", "default", "kind",
                                                           "meaning")))


def _width() -> int:
    """The terminal's width (100 when not a terminal), at most 120."""
    return min(120, shutil.get_terminal_size((100, 24)).columns)


def presets_listing(algo: str | None = None) -> str:
    """``purerl list --presets``: one line per preset (algorithm, environment, what it
    reaches), its overrides of the defaults wrapped below it, grouped by family."""
    from purerl import presets

    width = _width()
    rows = [r for r in presets.table() if algo in (None, r[0].split()[0])]
    lines: list[str] = []
    for family in dict.fromkeys(r[2] for r in rows):
        group = [r for r in rows if r[2] == family]
        lines += ["", f"{family}:"]
        table = format_table([(f"  {a}", e, reaches) for a, e, _, reaches, _ in group])
        for line, row in zip(table.splitlines(), group):
            lines.append(line)
            lines += textwrap.wrap(row[4], width, initial_indent="      ",
                                   subsequent_indent="      ")
    header = ("presets: algorithm, environment, what the preset reaches (final deterministic "
              "evaluation); below each, its overrides of the algorithm's defaults")
    return "\n".join([textwrap.fill(header, width), *lines, "", textwrap.fill(
        "'purerl train ALGO --env ENV' uses the preset; --no-preset the defaults. Measured by "
        "benchmarks/suite.py.", width)])


def cmd_list(args: argparse.Namespace) -> int:
    from purerl import envs

    if args.presets:
        print(presets_listing(args.algo))
        return 0
    if args.algo is not None:
        try:
            print(config_help(args.algo))
        except ValueError as e:
            return _fail(str(e))
        return 0
    algorithms = [(name, spaces, env) for name, (_, spaces, env) in purerl.ALGORITHMS.items()]
    print(format_table(algorithms, header=("algorithm", "action spaces", "default env")))
    groups: dict[str, list[str]] = {}
    for env_id in envs.registered():
        groups.setdefault(_env_group(env_id), []).append(env_id)
    print("\nenvironments (--env):")
    width = _width()
    for group, ids in groups.items():
        print(textwrap.fill(", ".join(ids), width, initial_indent=f"  {group}: ",
                            subsequent_indent="    "))
    from purerl import playground

    if not playground.available():
        print(f"  MuJoCo Playground: not installed; pip install 'purerl[mujoco]' (Python >= "
              f"3.11) adds {playground.PREFIX}<Task> ids for the DM Control suite tasks")
    print("\n'purerl list ALGO' shows an algorithm's config fields; 'purerl list --presets' "
          "the tuned presets.")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _device_flags(parser: argparse.ArgumentParser, resume: bool = False) -> None:
    default = "the run's" if resume else "one device"
    parser.add_argument("--devices", metavar="all|N",
                        help="shard the seeds over N devices (or all; padded where the seed "
                             f"count does not divide); default: {default}. README: 'Several "
                             "devices'")
    parser.add_argument("--data-parallel", action="store_true",
                        help="split each run's num_envs environments over the devices "
                             "(--devices, default all), averaging gradients ("
                             f"{', '.join(sorted(distributed.DATA_PARALLEL))})"
                             + ("; default: as the run was trained" if resume else ""))


def _checkpoint_flags(parser: argparse.ArgumentParser, resume: bool = False) -> None:
    default = "the run's" if resume else None
    parser.add_argument(
        "--checkpoint-every", type=_positive_int, metavar="N",
        help="also save a checkpoint after every N updates (one is always saved after the "
             "last). Checkpoints are taken between compiled chunks, so the chunk length is "
             "chosen as a divisor of N near --chunk (at most N) and every multiple of N is a "
             "chunk boundary; give --chunk a divisor of N to choose it yourself"
             + (f" (default: {default})" if default else ""))
    parser.add_argument("--keep", type=_positive_int, default=None if resume else 3,
                        metavar="K", help="keep the newest K checkpoints (default: "
                        + ("the run's)" if resume else "3)"))
    parser.add_argument(
        "--log", action="append", choices=(*loggers.KINDS, "none"), default=None if resume
        else [], help="also log every chunk's metrics to TensorBoard (RUN_DIR/tensorboard, "
        "pip install 'purerl[tensorboard]') or Weights & Biases (pip install 'purerl[wandb]'; "
        "WANDB_MODE=offline works without a network); repeat for both"
        + ("; default: the run's loggers, 'none' turns them off" if resume else ""))


def build_parser(help_algo: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``help_algo`` appends that algorithm's config fields to
    ``train --help``."""
    parser = _Parser(prog="purerl",
                     description="Train purerl's JAX RL algorithms on gymnax environments.",
                     epilog="example: purerl train ppo --env CartPole-v1 --seeds 4")
    parser.add_argument("--version", action="version", version=f"purerl {purerl.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser("train", help="train an algorithm on a gymnax environment",
                            description="Train ALGO on ENV for several vmapped seeds and write "
                                        "metrics, a learning curve and a summary to OUT/NAME/.",
                            epilog=config_help(help_algo) if help_algo else
                            "'purerl train ALGO --help' also lists ALGO's config fields.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("algo", metavar="ALGO", help=f"one of: {', '.join(purerl.ALGORITHMS)}")
    t.add_argument("--env", help="gymnax environment id (default: the algorithm's default)")
    t.add_argument("--seeds", type=_positive_int, default=1, help="seeds trained in parallel")
    t.add_argument("--seed", type=int, default=0, help="base random seed (default: 0)")
    t.add_argument("--total-timesteps", type=_positive_int, help="env steps per seed")
    t.add_argument("--no-preset", action="store_true",
                   help="start from the config defaults instead of the environment's preset")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lr=3e-4 --set hidden_sizes=64,64")
    t.add_argument("--out", default="runs", help="output root (default: runs)")
    t.add_argument("--name", help="run name (default: ALGO_ENV_TIMESTAMP)")
    t.add_argument("--chunk", type=_positive_int,
                   help="updates per compiled call (default: num_updates // 50)")
    _device_flags(t)
    _checkpoint_flags(t)
    t.set_defaults(func=cmd_train)

    r = commands.add_parser(
        "resume", help="continue a run from its newest checkpoint",
        description="Continue RUN_DIR from its newest checkpoint with the config in its "
                    "config.json, then rewrite metrics.json / metrics.csv (the checkpoint's rows "
                    "followed by the new ones), the learning curve and the summary. The result "
                    "equals the uninterrupted run's bitwise. --total-timesteps changes the budget "
                    "(e.g. extends a finished run); refused where a schedule depends on it "
                    "(anneal_lr=True; DQN's epsilon decay).")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of 'purerl train'")
    r.add_argument("--total-timesteps", type=_positive_int,
                   help="new budget: env steps per seed (default: the config's)")
    r.add_argument("--chunk", type=_positive_int,
                   help="updates per compiled call (default: the run's)")
    _device_flags(r, resume=True)
    _checkpoint_flags(r, resume=True)
    r.set_defaults(func=cmd_resume)

    e = commands.add_parser(
        "eval", help="evaluate a run's saved policy",
        description="Run episodes of every seed's policy from RUN_DIR's newest checkpoint (or "
                    "of the checkpoint directory given) and print the mean ± std return per "
                    "seed. Without options it repeats the run's final deterministic "
                    "evaluation: its episodes and keys.")
    e.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run directory, or one of its checkpoints/<updates> directories")
    e.add_argument("--episodes", type=_positive_int,
                   help="episodes per seed (default: the config's eval_episodes)")
    e.add_argument("--stochastic", action="store_true",
                   help="sample actions from the policy instead of its deterministic action")
    e.add_argument("--seed", type=int,
                   help="random seed of the episodes (default: the trainer's evaluation keys)")
    e.add_argument("--gif", metavar="PATH",
                   help="also render the first episode of one seed (--gif-seed) as an animated "
                        "GIF with gymnax's visualiser (classic control, Catch, MinAtar)")
    e.add_argument("--gif-seed", type=int, default=0, metavar="I",
                   help="the seed whose episode --gif renders (default: 0)")
    e.set_defaults(func=cmd_eval)

    ls = commands.add_parser("list", help="list algorithms and environments, or one algorithm's "
                                          "config fields")
    ls.add_argument("algo", metavar="ALGO", nargs="?",
                    help="show this algorithm's config fields with their help")
    ls.add_argument("--presets", action="store_true",
                    help="list the tuned presets (of ALGO, if given) and what they reach")
    ls.set_defaults(func=cmd_list)
    return parser


@contextlib.contextmanager
def _without_closed_loop_reports() -> Iterator[None]:
    """After a checkpoint save fails (a full disk), orbax's pending callbacks find their event
    loop closed and Python prints each as an "unraisable" traceback; the failure itself is
    reported in one line, so those are dropped. Every other unraisable exception is printed."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 bad input, 3 training diverged, 4 an OS
    error such as a full disk, 5 the run directory is in use by another process, 130
    interrupted by SIGINT, 143 by SIGTERM). Errors found by argparse itself (bad flags,
    ``--seeds 0``) raise ``SystemExit(2)`` instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_help = len(argv) > 2 and argv[0] == "train" and {"-h", "--help"} & set(argv)
    help_algo = argv[1] if wants_help and argv[1] in purerl.ALGORITHMS else None
    args = build_parser(help_algo).parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_without_closed_loop_reports())
            if args.command == "eval":  # (train and resume: once they hold the run directory)
                stack.enter_context(signals.interrupting())
            return args.func(args)
    except KeyboardInterrupt as e:  # outside training (which reports where the run stands)
        print(f"purerl: interrupted ({signals.name(e)})", file=sys.stderr)
        return signals.exit_code(e)
    except BrokenPipeError:  # e.g. `purerl list | head`: stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def entry() -> NoReturn:
    """The ``purerl`` command: :func:`main`, then exit. After a failure or an interrupt the
    process ends with ``os._exit`` once its output is flushed: XLA's and orbax's worker threads
    may still be running then (a computation in flight, a save that failed), and tearing the
    interpreter down under them crashed the process (a segmentation fault after "interrupted")
    or kept it alive for minutes. Everything purerl writes is complete before main returns."""
    code = main()
    if code == 0:
        sys.exit(0)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
