"""Run directories of the command line: making one, its ``config.json``, the lock held while a
process writes one, files written atomically, the state a directory is in, and what ``purerl
resume`` continues it from. The result files themselves are written by :mod:`purerl.results`.

The promise (docs/errors.md, "Faults and signals"): whatever stops a ``purerl train``, ``sweep``
or ``resume`` process, whenever, its run directory is in one of three states:

* **finished**: every result file (:data:`RESULTS`; a sweep's :data:`SWEEP_RESULTS`) is
  complete;
* **resumable**: it holds a complete checkpoint -- ``purerl resume`` continues it, or writes the
  missing result files when training had finished -- or only the ``config.json`` of a run that
  stopped before its first checkpoint, which ``purerl resume`` trains again from the start
  (same keys, so the same run);
* **free**: it holds no checkpoint and no result file, so ``purerl train --name`` accepts it.

What makes it hold: checkpoints are renamed into place when complete and removed by renaming
them out of the numbered names first (:mod:`purerl.checkpoint`); every other file is written
to a hidden temporary name and renamed over its own (:func:`write_atomic`); and one process at a
time writes a run directory (:func:`lock`), so no process removes another's temporary files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import purerl
from purerl import checkpoint
from purerl import config as config_lib

__all__ = ["CONFIG", "LOCK", "RESULTS", "RUN_KEYS", "RUN_OUTPUTS", "SWEEP_RESULTS", "Resume",
           "RunDirBusy", "RunOptions", "check_free", "lock", "missing_results", "new_run_dir",
           "nothing_to_resume", "plan_resume", "read_config", "standing", "taken",
           "write_atomic", "write_config", "write_json", "write_text"]

CONFIG = "config.json"  # the run's config and options (RUN_KEYS)
RESULTS = ("metrics.json", "metrics.csv", "summary.txt", "learning_curve.png")
# a sweep's (purerl.sweeps; config.json says "sweep"), besides a plot per swept key
SWEEP_RESULTS = ("metrics.json", "results.csv", "summary.json", "summary.txt", "best.json",
                 "learning_curves.png")
# what a run directory holds once 'purerl train' or 'purerl sweep' has used it
RUN_OUTPUTS = (CONFIG, *dict.fromkeys(RESULTS + SWEEP_RESULTS), checkpoint.CHECKPOINTS,
               "tensorboard", "wandb")
LOCK = ".purerl.lock"  # flock'ed while a process trains, resumes or prunes the run
HOLDER = ".purerl.holder"  # the process that holds (or last held) the lock
_TMP = ".tmp-"  # prefix of every temporary name purerl writes in a run directory


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock; the message names it."""


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return (f"process {holder['pid']} on {holder['host']} ({holder['purpose']}, since "
                f"{since})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def lock(run_dir: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """Hold ``RUN_DIR/.purerl.lock`` (``flock``, exclusive) for the ``with`` block; RunDirBusy
    naming the holder if another process has it. The kernel drops the lock when its holder
    exits however it exits (SIGKILL included), so a lock is never stale. On entry, temporary
    files left by an earlier process that was killed while writing are removed: no other
    process can be writing them now. ``purpose`` (e.g. ``"training"``) goes into the message a
    second process gets."""
    run_dir = Path(run_dir)
    # opened read-only: a file held open for writing would keep the file system from being
    # remounted read-only (and flock needs no write access); who holds it is in HOLDER
    fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"{run_dir} is in use by {_describe_holder(run_dir / HOLDER)}: one "
                             "process at a time trains or resumes a run; wait for it to finish "
                             "or stop it (its checkpoints stay valid)") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                  "since": time.time()}
        write_text(run_dir / HOLDER, json.dumps(holder) + "\n")
        remove_temporaries(run_dir)
        yield run_dir
    finally:
        os.close(fd)  # releases the flock


def remove_temporaries(run_dir: str | os.PathLike) -> None:
    """Remove the temporary files and checkpoint folders a killed process left in ``run_dir``
    (only safe while holding its :func:`lock`)."""
    run_dir = Path(run_dir)
    for stale in run_dir.glob(_TMP + "*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    checkpoint.remove_incomplete(run_dir, every_process=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` writes the file's content to ``tmp``, which then replaces ``path`` in one
    rename: ``path`` is either its old self or complete, never cut short (a full disk, a kill).
    A failure removes ``tmp`` and re-raises."""
    path = Path(path)
    tmp = path.parent / f"{_TMP}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`write_atomic` of a UTF-8 text."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (:func:`write_atomic`)."""
    write_text(path, json.dumps(obj, indent=1) + "\n")


def missing_results(run_dir: str | os.PathLike) -> list[str]:
    """The result files (:data:`RESULTS`, a sweep's :data:`SWEEP_RESULTS`) ``run_dir`` does
    not hold."""
    try:
        sweep = bool((read_config(Path(run_dir)) or {}).get("sweep"))
    except ValueError:  # an unreadable config.json: resuming says so
        sweep = False
    names = SWEEP_RESULTS if sweep else RESULTS
    return [name for name in names if not (Path(run_dir) / name).is_file()]


# ------------------------------------------------------------------ making a run directory


def new_run_dir(out: Path, name: str | None, algo: str, env: str) -> Path:
    """``out/name``, refused if it holds a run already (runs are never overwritten); without a
    name ``out/ALGO_ENV_TIMESTAMP``, with ``_2``, ``_3``, ... appended while that is taken."""
    if name is None:
        base = f"{algo}_{env.replace('/', '_')}_{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir, n = out / base, 1
        while taken(run_dir):
            n += 1
            run_dir = out / f"{base}_{n}"
        return run_dir
    run_dir = out / name
    check_free(run_dir, name)
    return run_dir


def check_free(run_dir: Path, name: str) -> None:
    """ValueError unless ``run_dir`` is free for ``--name``: no checkpoint, no result file. A
    directory left by a run that stopped before its first checkpoint (only its config.json,
    perhaps logger files) is free: nothing of it could be resumed."""
    newest = checkpoint.latest(run_dir)
    if newest is not None:  # never mix two runs' checkpoints (resume would pick the wrong one)
        raise ValueError(f"{run_dir} already holds checkpoints of a run (the newest after "
                         f"{newest.name} updates); continue it with 'purerl resume {run_dir}', "
                         f"or train under another --name (or delete "
                         f"{run_dir / checkpoint.CHECKPOINTS})")
    results = [n for n in dict.fromkeys(RESULTS + SWEEP_RESULTS) if (run_dir / n).exists()]
    if results:
        raise ValueError(f"--name {name}: {run_dir} already holds a run ({', '.join(results)}); "
                         "runs are never overwritten: train under another --name or delete it")


def taken(run_dir: Path) -> list[str]:
    """The outputs of an earlier run in ``run_dir`` (:data:`RUN_OUTPUTS`; empty if none)."""
    return [n for n in RUN_OUTPUTS if (run_dir / n).exists()]


def standing(run_dir: Path, num_updates: int | None = None) -> str:
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


# ------------------------------------------------------------------------------ config.json


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The run's options, which config.json holds after the config's fields (in this order)."""

    algo: str
    seeds: int
    seed: int | None
    preset: str | None
    chunk: int | None  # as asked for (None: the default length)
    checkpoint_every: int | None
    keep: int
    log: Sequence[str] = ()
    wandb_id: str | None = None
    devices: int | str | None = None
    data_parallel: bool = False
    sweep: Mapping[str, Any] | None = None  # a sweep's plan (purerl.sweeps.Plan.to_json)


# keys of config.json besides the config's fields
RUN_KEYS = tuple(field.name for field in dataclasses.fields(RunOptions))


def write_config(run_dir: Path, config: Any, options: RunOptions) -> None:
    """``RUN_DIR/config.json``: ``config``'s fields, then ``options``."""
    options_dict = dataclasses.asdict(options)
    if options_dict["sweep"] is None:  # a run's config.json as before sweeps existed
        del options_dict["sweep"]
    write_json(run_dir / CONFIG, {**config.to_dict(), **options_dict})


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's config.json (None if it has none); ValueError if unreadable."""
    path = run_dir / CONFIG
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


# ------------------------------------------------------------------------------- resuming


@dataclasses.dataclass
class Resume:
    """What ``purerl resume`` found: the run's config.json (as saved, or rebuilt from the
    checkpoint), its algorithm and config, and the restored run -- None for a run that stopped
    before its first checkpoint, which is trained again from the start."""

    saved: dict[str, Any]
    algo: str
    config: Any
    run: checkpoint.RestoredRun | None
    seeds: int
    seed: int | None


def plan_resume(run_dir: Path, total_timesteps: int | None) -> Resume:
    """Everything ``purerl resume`` checks before it writes: its newest checkpoint (verified),
    config.json against it and the new budget; without a checkpoint, config.json alone."""
    ckpt = checkpoint.latest(run_dir)
    saved = read_config(run_dir)
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
            f"{run_dir / CONFIG} says algo {algo!r} but the checkpoints of {run_dir} are "
            f"of a {meta['algo']} run; set \"algo\": \"{meta['algo']}\" again (checkpoints "
            "of another run were copied here?)")
    config = _config_from_saved(run_dir, meta["algo"], saved, total_timesteps)
    run = checkpoint.restore(ckpt, config)
    return Resume(saved, run.algo, run.config, run, run.num_seeds, run.seed)


def _config_from_saved(run_dir: Path, algo: str, saved: dict[str, Any],
                       total_timesteps: int | None) -> Any:
    module = purerl.get_algorithm(algo)
    fields = {k: v for k, v in saved.items() if k not in RUN_KEYS}
    if total_timesteps is not None:
        fields["total_timesteps"] = total_timesteps
    try:
        return module.Config.from_dict(fields)
    except ValueError as e:
        raise ValueError(f"{run_dir / CONFIG}: {e}") from None


def _plan_restart(run_dir: Path, saved: dict[str, Any], total_timesteps: int | None
                  ) -> Resume:
    """A run that stopped before its first checkpoint, from its config.json."""
    algo, seeds, seed = saved.get("algo"), saved.get("seeds"), saved.get("seed")
    if algo not in purerl.ALGORITHMS:
        raise ValueError(f"{run_dir / CONFIG} names no algorithm purerl has (algo="
                         f"{algo!r}); train the run again with 'purerl train'")
    if not isinstance(seeds, int) or seeds < 1 or not isinstance(seed, int):
        raise ValueError(f"{run_dir / CONFIG} lacks a valid seeds / seed (seeds={seeds!r}"
                         f", seed={seed!r}); train the run again with 'purerl train'")
    config_lib.check_seed(seed, "seed in config.json")
    config = _config_from_saved(run_dir, algo, saved, total_timesteps)
    return Resume(saved, algo, config, None, seeds, seed)


def nothing_to_resume(run_dir: Path, plan: Resume) -> str | None:
    """Why ``purerl resume`` has nothing to do (None where it has): a run trained to the end of
    its budget with every result file written, or one with every result file but no
    checkpoint left to continue from."""
    if missing_results(run_dir):
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
