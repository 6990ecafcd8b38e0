"""Command line: ``purerl train ALGO --env ENV ...``, ``purerl resume RUN_DIR``, ``purerl eval
RUN_DIR`` and ``purerl list``.

``train`` runs ``--seeds`` vmapped seeds in compiled chunks with a progress bar, saves
checkpoints (:mod:`purerl.checkpoint`) every ``--checkpoint-every`` updates and after the last,
then writes ``config.json``, ``metrics.json``, ``metrics.csv``, ``learning_curve.png`` and
``summary.txt`` to ``<out>/<name>/`` and prints the summary table; ``--log`` also logs every
chunk to TensorBoard or wandb (:mod:`purerl.loggers`). ``resume`` continues a run from its
newest checkpoint and rewrites those files; ``eval`` runs episodes of a saved policy and with
``--gif`` draws one (:mod:`purerl.render`). This module parses the arguments and runs the
commands; the work is done by :mod:`purerl.driver` (training), :mod:`purerl.rundir` (the run
directory, config.json, resuming), :mod:`purerl.results` (the result files) and
:mod:`purerl.inference` (evaluating a saved policy).
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
import json
import os
import re
import shutil
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

import jax
import numpy as np

import purerl
from purerl import checkpoint, distributed, loggers, loop, rundir, signals
from purerl import config as config_lib
from purerl import driver, memory, presets, sweeps
from purerl.results import format_table
from purerl.placement import placement as device_placement

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


# ------------------------------------------------------------------------------- commands


def setup_train(args: argparse.Namespace, runs: Callable[[Any], int] | None = None,
                runs_name: str = "--seeds") -> tuple[Any, loop.Agent, Path, str | None]:
    """Validate everything before compiling: ``--seed``, ``--name``, the config (the
    environment's preset unless ``--no-preset``, then the ``--config`` file's fields, then
    ``--set`` and ``--total-timesteps`` on top; a flag and a ``--set`` of the same field must
    agree), the agent, its memory estimate for ``--seeds`` seeds, or ``runs(config)`` runs
    (:mod:`purerl.memory`) and the run directory, which must not hold a run yet. Returns them
    with the preset's name (None when none was used)."""
    config, agent, preset, notes = configure(args)
    count = args.seeds if runs is None else runs(config)
    memory.check(agent, count, what=f"{args.algo} on {config.env}", seeds_name=runs_name)
    prefix = args.algo if runs is None else f"sweep_{args.algo}"
    run_dir = rundir.new_run_dir(Path(args.out), args.name, prefix, config.env)
    for note in notes:
        print(note, file=sys.stderr)
    return config, agent, run_dir, preset.name if preset else None


# keys of a --config file that are not config fields: a run's options (config.json) and what
# a sweep's best.json says about where it comes from
_NOT_FIELDS = (*rundir.RUN_KEYS, "sweep_rank", "sweep_config")


def read_config_file(path: str, algo: str, config_cls: type) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
    """``--config FILE``: a JSON object of config fields (a run's config.json, a sweep's
    best.json, or a hand-written subset). Returns its config fields and its ``seeds`` /
    ``seed`` (the defaults of ``--seeds`` / ``--seed``); ValueError (one line) for an unreadable
    file, another algorithm's, or an unknown field (naming the closest)."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: cannot read it as JSON ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config fields")
    if "best" in values and values["best"] is None:  # a sweep's best.json when all diverged
        raise ValueError(f"--config {path} holds no configuration: {values.get('why')}")
    if values.get("algo", algo) != algo:
        raise ValueError(f"--config {path} is a {values['algo']} config, not {algo}'s; "
                         f"use 'purerl train {values['algo']} --config {path}'")
    fields = {k: v for k, v in values.items() if k not in _NOT_FIELDS}
    try:
        config_cls.check_keys(fields)
    except ValueError as e:
        raise ValueError(f"--config {path}: {e}") from None
    return fields, {k: values[k] for k in ("seeds", "seed") if values.get(k) is not None}


def configure(args: argparse.Namespace) -> tuple[Any, loop.Agent, Any, list[str]]:
    """The config and agent of ``train`` / ``sweep``'s flags, the preset used (None where
    none) and the notes to print about them; also settles ``args.seeds`` / ``args.seed``
    (the flag, else the ``--config`` file's, else 1 / 0). ValueError (one line) for bad
    input."""
    module = purerl.get_algorithm(args.algo)
    file_fields, file_run = ({}, {}) if not getattr(args, "config", None) else \
        read_config_file(args.config, args.algo, module.Config)
    args.seeds = args.seeds if args.seeds is not None else file_run.get("seeds", 1)
    args.seed = args.seed if args.seed is not None else file_run.get("seed", 0)
    if not isinstance(args.seeds, int) or args.seeds < 1:
        raise ValueError(f"--config {args.config}: seeds must be a positive integer, got "
                         f"{args.seeds!r}")
    config_lib.check_seed(args.seed, "--seed")
    if args.name is not None:
        _check_name(args.name)
    set_values = parse_overrides(args.set, module.Config)
    env = (_agree("--env", args.env, "env", set_values) or file_fields.get("env")
           or purerl.ALGORITHMS[args.algo][2])
    total = _agree("--total-timesteps", args.total_timesteps, "total_timesteps", set_values)
    preset = None if args.no_preset else presets.lookup(args.algo, env)
    overrides = {**(preset.overrides if preset else {}), **file_fields, **set_values,
                 "env": env}
    if total is not None:
        overrides["total_timesteps"] = total
    try:
        config = module.Config.from_dict(overrides)
    except ValueError as e:
        raise ValueError(f"--config {args.config}: {e}" if file_fields and not set_values
                         else str(e)) from None
    agent = module.make_agent(config)
    eval_note = None
    if "eval_every" not in set_values and "eval_every" not in file_fields:
        config, eval_note = enough_evaluations(config, agent.num_updates)
        if eval_note:
            agent = module.make_agent(config)
    notes = []
    if args.no_preset:
        notes.append("--no-preset: the defaults of the config")
    elif preset is None:
        notes.append(f"no {args.algo} preset for {env}: the defaults, tuned for "
                     f"{purerl.ALGORITHMS[args.algo][2]} ('purerl list --presets' lists the "
                     "presets)")
    else:
        measured = preset.measured
        notes.append(f"preset {preset.name}" + (f" (reaches {measured.summary()})" if measured
                                                 else "")
                     + ("; --config / --set / --total-timesteps override it"
                        if args.set or args.total_timesteps or file_fields else ""))
        if preset.caveat:
            notes.append(f"note: {preset.caveat}")
    if file_fields:
        notes.append(f"--config {args.config}: {len(file_fields)} field(s) on top of the "
                     + ("defaults" if preset is None else "preset"))
    if eval_note:
        notes.append(eval_note)
    return config, agent, preset, notes


MIN_EVALUATIONS = 10  # a CLI run evaluates at least this often unless --set eval_every says


def enough_evaluations(config: Any, num_updates: int) -> tuple[Any, str | None]:
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


def _fail(message: str, code: int = 2) -> int:
    print(f"purerl: error: {' '.join(message.split())}", file=sys.stderr)
    return code


EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OS_ERROR, EXIT_BUSY = 2, 3, 4, 5


def _os_error_text(error: OSError) -> str:
    """An OSError as ``PATH: cause`` (``cause`` alone when it names no path)."""
    cause = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {cause}" if error.filename else cause


def _chunk_length(agent: loop.Agent, chunk: int | None, every: int | None) -> int:
    """The chunk length run_chunked will use (so the messages are true): about ``chunk``
    updates (default num_updates // 50), a divisor of ``every`` where one is near."""
    requested = chunk or max(1, agent.num_updates // 50)
    return loop.even_chunk(agent.num_updates, requested, every)


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
    # imported here, not at the top: the point is when (and that only train and resume wait
    # for these seconds of importing)
    import matplotlib.figure  # noqa: F401
    import orbax.checkpoint  # noqa: F401


def _guarded(run_dir: Path, config: Any, num_updates: int, body: Callable[[], int]) -> int:
    """``body()``, with everything that can stop it reported in one line naming where the run
    stands (:func:`purerl.rundir.standing`): divergence (exit 3), an OS error such as a full
    disk or a read-only directory (exit 4), SIGINT / SIGTERM (exit 128 + the signal's
    number)."""
    try:
        code = body()
        signals.raise_if_interrupted()  # one that arrived after the last chunk
        return code
    except loop.DivergenceError as e:
        return _diverged(e, config, run_dir)
    except KeyboardInterrupt as e:
        print(f"purerl: interrupted ({signals.name(e)}); {rundir.standing(run_dir, num_updates)}",
              file=sys.stderr)
        return signals.exit_code(e)
    except OSError as e:
        return _fail(f"{_os_error_text(e)}; {rundir.standing(run_dir, num_updates)}",
                     EXIT_OS_ERROR)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        log = loggers.chosen(args.log)
        devices, data_parallel = getattr(args, "devices", None), getattr(args, "data_parallel",
                                                                          False)
        distributed.device_count(devices)  # before the run directory is made
        config, agent, run_dir, preset = setup_train(args)
        placement = device_placement(devices, data_parallel, config)
        agent = placement.agent(config, agent)
    except (ValueError, OSError) as e:  # unknown algo/env/key, bad value, unwritable --out
        return _fail(str(e))
    options = rundir.RunOptions(
        algo=args.algo, seeds=args.seeds, seed=args.seed, preset=preset, chunk=args.chunk,
        checkpoint_every=args.checkpoint_every, keep=args.keep, log=log, devices=devices,
        data_parallel=data_parallel)
    with contextlib.ExitStack() as stack:
        failed = _take_run_dir(stack, args, run_dir, config, options, f"training {args.algo}")
        if failed is not None:
            return failed
        chunk = _chunk_length(agent, args.chunk, args.checkpoint_every)
        print(f"training {args.algo} on {config.env}: {args.seeds} seed(s) x "
              f"{agent.num_updates} updates, {chunk} per compiled call, {_eval_note(agent)}, "
              f"{_checkpoint_note(args.checkpoint_every, args.keep)} -> {run_dir}",
              file=sys.stderr)
        if placement.mesh is not None:
            print(f"devices: {placement.describe(config, args.seeds)}", file=sys.stderr)
        return _guarded(run_dir, config, agent.num_updates, lambda: _summary(driver.train_run(
            args.algo, config, agent, run_dir,
            keys=jax.random.split(jax.random.key(args.seed), args.seeds), seeds=args.seeds,
            seed=args.seed, chunk=chunk, every=args.checkpoint_every, keep=args.keep, log=log,
            placement=placement), run_dir))


def _sample_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--sample N KEY=DIST: N must be a positive integer, got {text!r}")
    return count


def _take_run_dir(stack: contextlib.ExitStack, args: argparse.Namespace, run_dir: Path,
                  config: Any, options: rundir.RunOptions, purpose: str) -> int | None:
    """Make ``run_dir``, hold its lock and the signal handlers (on ``stack``) and write its
    config.json; the exit code of a failure (None when it worked)."""
    try:
        _import_what_training_imports()
        run_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(rundir.lock(run_dir, purpose))
        stack.enter_context(signals.interrupting())
        if args.name is not None:  # again, now that no other process can be writing it
            rundir.check_free(run_dir, args.name)
        reused = rundir.taken(run_dir)
        rundir.write_config(run_dir, config, options)
    except rundir.RunDirBusy as e:
        return _fail(str(e), EXIT_BUSY)
    except OSError as e:
        return _fail(f"{_os_error_text(e)}; nothing was trained", EXIT_OS_ERROR)
    except ValueError as e:
        return _fail(str(e))
    if reused:
        print(f"{run_dir} held a run that stopped before its first checkpoint "
              f"({', '.join(reused)}): training anew there", file=sys.stderr)
    return None


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        devices = args.devices
        distributed.device_count(devices)  # before the run directory is made
        grid = sweeps.parse_grid(args.grid)
        counts = {_sample_count(n) for n, _ in args.sample}
        if len(counts) > 1:
            raise ValueError(f"--sample N KEY=DIST: every --sample must give the same N (the "
                             f"number of random configurations), got {sorted(counts)}")
        samples = {}
        for _, item in args.sample:
            key, sep, dist = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--sample expects N KEY=DIST, got {item!r}")
            if key.strip() in samples:
                raise ValueError(f"--sample {key.strip()} is given twice")
            samples[key.strip()] = sweeps.parse_distribution(dist)
        num_samples, plans = (counts.pop() if counts else 0), []

        def runs(config: Any) -> int:
            plans.append(sweeps.make_plan(
                config, grid, samples=samples, num_samples=num_samples,
                seeds=args.seeds, seed=args.seed,
                sample_seed=args.seed if args.sample_seed is None else args.sample_seed))
            return plans[-1].num_runs

        config, agent, run_dir, preset = setup_train(args, runs, "the configurations x --seeds")
        plan = plans[-1]
        placement = device_placement(devices, False, config)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    options = rundir.RunOptions(
        algo=args.algo, seeds=args.seeds, seed=args.seed, preset=preset, chunk=args.chunk,
        checkpoint_every=args.checkpoint_every, keep=args.keep, devices=devices,
        sweep=plan.to_json())
    with contextlib.ExitStack() as stack:
        failed = _take_run_dir(stack, args, run_dir, config, options, f"sweeping {args.algo}")
        if failed is not None:
            return failed
        chunk = _chunk_length(agent, args.chunk, args.checkpoint_every)
        print(f"sweeping {args.algo} on {config.env}: {len(plan.points)} configuration(s) of "
              f"{', '.join(plan.keys_swept)} x {args.seeds} seed(s) = {plan.num_runs} runs in "
              f"one program, {agent.num_updates} updates, {chunk} per compiled call, "
              f"{_eval_note(agent)}, {_checkpoint_note(args.checkpoint_every, args.keep)} -> "
              f"{run_dir}", file=sys.stderr)
        if placement.mesh is not None:
            print(f"devices: {placement.describe(config, plan.num_runs)}", file=sys.stderr)
        return _guarded(run_dir, config, agent.num_updates, lambda: _summary(driver.train_run(
            args.algo, config, agent, run_dir, keys=plan.keys(), seeds=plan.num_runs,
            seed=args.seed, chunk=chunk, every=args.checkpoint_every, keep=args.keep,
            placement=placement, sweep=plan), run_dir))


def _summary(table: str, run_dir: Path) -> int:
    """Print a finished run's summary table (:func:`purerl.results.write`); exit code 0."""
    print(table)
    print(f"run directory: {run_dir}")
    return 0


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


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if (run_dir / checkpoint.METADATA).is_file():
        return _fail(f"{run_dir} is a checkpoint; pass its run directory {run_dir.parent.parent} "
                     "(resume continues from the newest checkpoint; delete newer ones to go "
                     "back)")
    with contextlib.ExitStack() as stack:
        try:
            plan = _hold_for_resume(run_dir, args.total_timesteps, stack)
            saved, run, config = plan.saved, plan.run, plan.config
            log = loggers.chosen(args.log, saved.get("log") or ())
            given = args.devices is not None or args.data_parallel
            devices = args.devices if given else saved.get("devices")
            data_parallel = args.data_parallel if given else bool(saved.get("data_parallel"))
            placement = device_placement(devices, data_parallel, config)
            module = purerl.get_algorithm(plan.algo)
            agent = placement.agent(config, run.agent if run else module.make_agent(config))
            sweep, lanes = _sweep_of(plan), plan.seeds
            if sweep is not None:
                lanes = sweep.num_runs
                if data_parallel:
                    raise ValueError("a sweep runs its configurations x seeds sharded over the "
                                     "devices (--devices), not data parallel")
                if run is not None and run.num_seeds != lanes:
                    raise ValueError(f"{run_dir}: its checkpoint holds {run.num_seeds} runs but "
                                     f"config.json's sweep has {lanes}; run the sweep again")
        except rundir.RunDirBusy as e:
            return _fail(str(e), EXIT_BUSY)
        except OSError as e:
            return _fail(_os_error_text(e), EXIT_OS_ERROR)
        except ValueError as e:  # CheckpointError is a ValueError
            return _fail(str(e))
        if run is not None and run.updates_done >= agent.num_updates:
            return _write_missing_results(run_dir, plan, agent, placement, sweep)
        every = args.checkpoint_every or saved.get("checkpoint_every")
        keep = args.keep or saved.get("keep") or 3
        chunk_arg = args.chunk or saved.get("chunk")
        chunk = _chunk_length(agent, chunk_arg, every)
        options = rundir.RunOptions(
            algo=plan.algo, seeds=plan.seeds, seed=plan.seed, preset=saved.get("preset"),
            chunk=chunk_arg, checkpoint_every=every, keep=keep, log=log,
            wandb_id=saved.get("wandb_id") if run else None, devices=devices,
            data_parallel=data_parallel, sweep=saved.get("sweep"))
        try:
            rundir.write_config(run_dir, config, options)
        except OSError as e:
            return _fail(f"{_os_error_text(e)}; {rundir.standing(run_dir, agent.num_updates)}",
                         EXIT_OS_ERROR)
        print(_resume_message(run_dir, plan, agent, chunk, every, keep, sweep), file=sys.stderr)
        keys = None if run else (sweep.keys() if sweep else
                                 jax.random.split(jax.random.key(plan.seed), plan.seeds))
        return _guarded(run_dir, config, agent.num_updates, lambda: _summary(driver.train_run(
            plan.algo, config, agent, run_dir, keys=keys, resumed=run, seeds=lanes,
            seed=plan.seed, chunk=chunk, every=every, keep=keep, log=log,
            placement=placement, sweep=sweep), run_dir))


def _sweep_of(plan: rundir.Resume) -> sweeps.Plan | None:
    """The sweep a resumed run directory holds (config.json's "sweep"), None for a run."""
    saved = plan.saved.get("sweep")
    if not saved:
        return None
    seeds, seed = plan.saved.get("seeds"), plan.saved.get("seed")
    if not isinstance(seeds, int) or seeds < 1 or not isinstance(seed, int):
        raise ValueError(f"config.json of this sweep lacks a valid seeds / seed (seeds={seeds!r}"
                         f", seed={seed!r}); run the sweep again")
    return sweeps.Plan.from_json(plan.config, saved, seeds, seed)


def _hold_for_resume(run_dir: Path, total_timesteps: int | None, stack: contextlib.ExitStack
                     ) -> rundir.Resume:
    """What ``purerl resume`` continues (:func:`purerl.rundir.plan_resume`), with the run
    directory's lock and the signal handlers entered on ``stack``. Everything is checked before
    the lock is taken (a refused resume writes nothing), and again under it if another process
    saved a checkpoint meanwhile; ValueError where there is nothing to resume."""
    plan = rundir.plan_resume(run_dir, total_timesteps)
    refusal = rundir.nothing_to_resume(run_dir, plan)
    if refusal:
        raise ValueError(refusal)
    _import_what_training_imports()
    stack.enter_context(rundir.lock(run_dir, "resuming"))
    stack.enter_context(signals.interrupting())
    if checkpoint.latest(run_dir) != (plan.run.path if plan.run else None):
        plan = rundir.plan_resume(run_dir, total_timesteps)
    return plan


def _write_missing_results(run_dir: Path, plan: rundir.Resume, agent: loop.Agent,
                           placement: Any, sweep: sweeps.Plan | None = None) -> int:
    """``purerl resume`` of a run trained to the end that stopped before (or while) writing
    its results: write them from the final checkpoint."""
    run = plan.run
    missing = rundir.missing_results(run_dir)
    print(f"{run_dir} finished training ({run.updates_done} updates; checkpoint {run.path}); "
          f"writing its missing results ({', '.join(missing)})", file=sys.stderr)
    wall = float(run.metadata["extra"].get("wall_s", 0.0))
    return _guarded(run_dir, plan.config, agent.num_updates, lambda: _summary(
        driver.write_results(plan.algo, plan.config, run_dir, run.metrics, wall, plan.seeds,
                             placement, sweep, run.metadata["extra"].get("diverged_at")),
        run_dir))


def _resume_message(run_dir: Path, plan: rundir.Resume, agent: loop.Agent, chunk: int,
                    every: int | None, keep: int, sweep: sweeps.Plan | None = None) -> str:
    """The line ``purerl resume`` says before it trains."""
    run, config = plan.run, plan.config
    if sweep is not None:
        where = (f"from {run.path} at update {run.updates_done}" if run else
                 "from the start (it stopped before its first checkpoint; the same keys)")
        return (f"resuming the sweep of {plan.algo} on {config.env} {where}: "
                f"{len(sweep.points)} configuration(s) x {sweep.seeds} seed(s), "
                f"{agent.num_updates} updates, {chunk} per compiled call, "
                f"{_checkpoint_note(every, keep)}")
    if run is None:
        return (f"{run_dir} stopped before its first checkpoint: training {plan.algo} on "
                f"{config.env} again from the start ({plan.seeds} seed(s) from seed "
                f"{plan.seed}, the same keys), {chunk} per compiled call, "
                f"{_checkpoint_note(every, keep)}")
    extended = config.total_timesteps != run.metadata["config"]["total_timesteps"]
    return (f"resuming {plan.algo} on {config.env} from {run.path}: {plan.seeds} seed(s) "
            f"at update {run.updates_done} of {agent.num_updates}"
            + (f" (budget changed to total_timesteps={config.total_timesteps})"
               if extended else "")
            + f", {chunk} per compiled call, {_checkpoint_note(every, keep)}")


def cmd_eval(args: argparse.Namespace) -> int:
    # lazy (as in cmd_list): they import gymnax, seconds that --help or a bad flag never wait
    from purerl import envs, inference, render

    try:
        if args.seed is not None:
            config_lib.check_seed(args.seed, "--seed")
        run = inference.load(args.run_dir)
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
        frames = render.save_gif(envs.make(run.config.env), recording, args.gif)
        print(f"{args.gif}: seed {args.gif_seed}'s first episode, {frames} steps, return "
              f"{returns[args.gif_seed, 0]:.4g}")
    return 0


def _env_group(env_id: str) -> str:
    if env_id.startswith("Probe"):
        return "probes"
    if env_id.startswith("playground/"):
        return "MuJoCo Playground (mujoco extra)"
    if env_id.startswith("xminigrid/"):
        return "XLand-MiniGrid (memory extra)"
    if env_id.startswith(("Stateless", "MemoryChain")):
        return "partially observable"
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
    # lazy: they import gymnax, seconds that --help or a bad flag never wait for
    from purerl import envs, playground

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
                             f"count does not divide); default: {default}. See docs/devices.md, "
                             "'Several devices'")
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
    _add_train(commands, help_algo)
    _add_sweep(commands)
    _add_resume(commands)
    _add_eval(commands)
    ls = commands.add_parser("list", help="list algorithms and environments, or one algorithm's "
                                          "config fields")
    ls.add_argument("algo", metavar="ALGO", nargs="?",
                    help="show this algorithm's config fields with their help")
    ls.add_argument("--presets", action="store_true",
                    help="list the tuned presets (of ALGO, if given) and what they reach")
    ls.set_defaults(func=cmd_list)
    return parser


def _add_train(commands: Any, help_algo: str | None) -> None:
    """The ``train`` command (``commands``: build_parser's subparsers)."""
    t = commands.add_parser("train", help="train an algorithm on a gymnax environment",
                            description="Train ALGO on ENV for several vmapped seeds and write "
                                        "metrics, a learning curve and a summary to OUT/NAME/.",
                            epilog=config_help(help_algo) if help_algo else
                            "'purerl train ALGO --help' also lists ALGO's config fields.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_flags(t)
    t.add_argument("--name", help="run name (default: ALGO_ENV_TIMESTAMP)")
    _device_flags(t)
    _checkpoint_flags(t)
    t.set_defaults(func=cmd_train)


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``train`` and ``sweep`` share: what to train and where."""
    parser.add_argument("algo", metavar="ALGO", help=f"one of: {', '.join(purerl.ALGORITHMS)}")
    parser.add_argument("--env", help="gymnax environment id (default: the --config file's, "
                                      "else the algorithm's default)")
    parser.add_argument("--seeds", type=_positive_int, default=None,
                        help="seeds trained in parallel (default: the --config file's, else 1)")
    parser.add_argument("--seed", type=int, default=None,
                        help="base random seed (default: the --config file's, else 0)")
    parser.add_argument("--total-timesteps", type=_positive_int, help="env steps per seed")
    parser.add_argument("--no-preset", action="store_true",
                        help="start from the config defaults instead of the environment's "
                             "preset")
    parser.add_argument("--config", metavar="FILE.json",
                        help="config fields from a JSON file on top of the preset (a run's "
                             "config.json, a sweep's best.json, or a hand-written subset); "
                             "--set goes on top of it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set lr=3e-4 --set "
                             "hidden_sizes=64,64")
    parser.add_argument("--out", default="runs", help="output root (default: runs)")
    parser.add_argument("--chunk", type=_positive_int,
                        help="updates per compiled call (default: num_updates // 50)")


def _add_sweep(commands: Any) -> None:
    w = commands.add_parser(
        "sweep", help="train a grid / random search of hyperparameters x seeds in one program",
        description="Train every configuration of the --grid values (their product) and/or "
                    "of N random --sample draws, each for --seeds seeds, as one compiled "
                    "program (configurations x seeds vmapped), then rank the configurations "
                    "by the interquartile mean of their final evaluation returns with 95%% "
                    "bootstrap intervals. Writes results.csv (one row per configuration and "
                    "seed), summary.json / summary.txt (the ranking), best.json (the best "
                    "configuration's config: 'purerl train ALGO --config best.json'), "
                    "metrics.json, learning_curves.png and sweep_KEY.png per swept key to "
                    "OUT/NAME/. A configuration that diverges is marked; the others go on.",
        epilog="example: purerl sweep ppo --env CartPole-v1 --grid lr=1e-3,3e-3 "
               "--grid ent_coef=0,0.01 --seeds 8")
    _config_flags(w)
    w.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values of a traced hyperparameter (repeat for more: their product)")
    w.add_argument("--sample", action="append", default=[], nargs=2,
                   metavar=("N", "KEY=DIST"),
                   help="N random configurations, KEY drawn from loguniform(LO,HI), "
                        "uniform(LO,HI) or choice(A,B,...) (repeat with the same N for more "
                        "keys; with --grid: the N draws combined with every grid point)")
    w.add_argument("--sample-seed", type=int,
                   help="random seed of the --sample draws (default: --seed)")
    w.add_argument("--name", help="sweep name (default: sweep_ALGO_ENV_TIMESTAMP)")
    w.add_argument("--devices", metavar="all|N",
                   help="shard the configurations x seeds over N devices (or all); default: "
                        "one device")
    w.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="also save a checkpoint after every N updates (one is always saved "
                        "after the last); 'purerl resume' continues a stopped sweep")
    w.add_argument("--keep", type=_positive_int, default=3, metavar="K",
                   help="keep the newest K checkpoints (default: 3)")
    w.set_defaults(func=cmd_sweep)


def _add_resume(commands: Any) -> None:
    r = commands.add_parser(
        "resume", help="continue a run from its newest checkpoint",
        description="Continue RUN_DIR from its newest checkpoint with the config in its "
                    "config.json, then rewrite metrics.json / metrics.csv (the checkpoint's rows "
                    "followed by the new ones), the learning curve and the summary. The result "
                    "equals the uninterrupted run's bitwise. --total-timesteps changes the budget "
                    "(e.g. extends a finished run); refused where a schedule depends on it "
                    "(anneal_lr=True; DQN's epsilon decay).")
    r.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run directory of 'purerl train' or 'purerl sweep'")
    r.add_argument("--total-timesteps", type=_positive_int,
                   help="new budget: env steps per seed (default: the config's)")
    r.add_argument("--chunk", type=_positive_int,
                   help="updates per compiled call (default: the run's)")
    _device_flags(r, resume=True)
    _checkpoint_flags(r, resume=True)
    r.set_defaults(func=cmd_resume)


def _add_eval(commands: Any) -> None:
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


@contextlib.contextmanager
def _without_closed_loop_reports() -> Iterator[None]:
    """After a checkpoint save fails (a full disk), orbax's pending callbacks find their event
    loop closed and Python prints each as an "unraisable" traceback; the failure itself is
    reported in one line, so those are dropped. So is an interrupt raised inside a
    garbage-collector callback, which Python swallows: :func:`purerl.signals.raise_if_interrupted`
    raises it again where it can stop the command. Every other unraisable exception is
    printed."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        if isinstance(error, signals.Interrupted):
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
            code = args.func(args)
            signals.raise_if_interrupted()  # eval: an interrupt that a gc callback swallowed
            return code
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
