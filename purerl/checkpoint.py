"""Checkpoints of training runs: save the whole vmapped train state and restore it exactly (a
trained policy is loaded from one by :mod:`purerl.inference`).

A checkpoint of a run directory lives in ``RUN_DIR/checkpoints/<updates_done>/`` and holds

* ``state/``: the train state of every seed (an orbax-checkpoint ``StandardCheckpointer``
  directory: parameters, optimiser state, environment state, replay buffer, observation
  normaliser, PRNG keys, counters and traced hyperparameters -- exactly what
  :func:`purerl.loop.run_chunked` yields) and the metrics of the updates done so far;
* ``purerl_checkpoint.json``: the algorithm, the whole config, the purerl version, the updates
  done, the number of seeds, the base seed, a fingerprint of the state's layout (tree paths,
  shapes and dtypes), the sha256 of every file of ``state/`` and a checksum of itself.

Nothing is pickled. A checkpoint is written into a hidden temporary directory next to the others
and renamed into place once complete (a rename is atomic), and only directories named by a
number that hold the metadata file count, so a half-written checkpoint is never restored.

Restoring (:func:`restore`, :func:`purerl.inference.load`) verifies every file against its
recorded sha256 before reading it, then restores into a target built with ``jax.eval_shape`` of
the trainer's vmapped ``init`` for the saved config, so the state comes back with its own types
(flax structs, NamedTuples, typed keys), not as dicts. Every problem -- no checkpoint, a
missing, truncated or modified file, another algorithm's run, a state layout this purerl does
not build, a changed config field -- is a :class:`CheckpointError`: one line naming the problem
and the fix, raised before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import purerl
from purerl import faults, loop, prng
from purerl.config import BaseConfig
from purerl.replay import ReplayBuffer

__all__ = ["CHECKPOINTS", "METADATA", "CheckpointError", "CheckpointWriteError", "RestoredRun",
           "checkpoints", "checksum", "find", "fingerprint", "latest", "read_metadata", "remove",
           "remove_incomplete", "restore", "save"]

CHECKPOINTS = "checkpoints"  # the run directory's subdirectory of checkpoints
METADATA = "purerl_checkpoint.json"  # present only in a complete checkpoint
FORMAT = 1  # version of the checkpoint layout written here
_STATE = "state"
_TMP = ".tmp-"  # hidden temporary folders: a save in progress, a checkpoint being removed


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored (or a restore request that does not fit it); the
    message is one line naming the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# ------------------------------------------------------------------------------ helpers


def fingerprint(state: Any) -> str:
    """A hash of a state's layout: every leaf's tree path, shape and dtype (values are not
    hashed). Arrays and ``jax.ShapeDtypeStruct`` leaves give the same fingerprint."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    text = "\n".join(f"{jax.tree_util.keystr(path)}:{tuple(np.shape(x))}:{x.dtype}"
                     for path, x in leaves)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by path relative to it (``/``-separated)."""
    return {p.relative_to(directory).as_posix(): _sha256(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def checksum(meta: Mapping[str, Any]) -> str:
    """The checksum a checkpoint's metadata records of itself (of every other entry)."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _num_seeds(state: Any) -> int:
    shape = np.shape(state.run.update_step)
    if len(shape) != 1:
        raise ValueError("expected a state with one leading seed axis (from loop.run_chunked "
                         f"or jax.vmap(train)); its update counter has shape {shape}")
    return int(shape[0])


def _target(agent: loop.Agent, num_seeds: int) -> Any:
    """The abstract state (``jax.ShapeDtypeStruct`` leaves) of ``num_seeds`` vmapped inits."""
    keys = jax.random.split(jax.random.key(0), num_seeds)
    return jax.eval_shape(loop.vmapped_init(agent, False), keys, None)


def _make_agent(config: Any) -> loop.Agent:
    return purerl.get_algorithm(config.algo).make_agent(config)


# ------------------------------------------------------------------------------- saving


def checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints of a run directory, ``(updates_done, path)``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(p.name), p) for p in root.iterdir()
             if p.name.isdigit() and p.is_dir() and (p / METADATA).is_file()]
    return sorted(found)


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run directory (None if it has none)."""
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def save(run_dir: str | os.PathLike, config: Any, state: Any,
         metrics: Mapping[str, Any] | None = None, *, seed: int | None = None, keep: int = 3,
         extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``state`` (every seed's train state, leading seed axis; e.g. the state
    :func:`purerl.loop.run_chunked` yields) and the ``metrics`` so far (``[seeds, updates]``
    arrays) as ``RUN_DIR/checkpoints/<updates_done>/``, atomically, then delete all but the
    newest ``keep`` checkpoints. ``config``: the run's Config; ``seed``: the base seed the keys
    were split from (recorded only); ``extra``: JSON-able values to record (the CLI records its
    wall time). Returns the checkpoint's path."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    num_seeds, done = _num_seeds(state), loop.updates_done(state)
    metrics = {k: np.asarray(jax.device_get(v)) for k, v in (metrics or {}).items()}
    for name, value in metrics.items():
        if value.shape[:2] != (num_seeds, done):
            raise ValueError(f"metric {name!r} has shape {value.shape}; expected "
                             f"({num_seeds}, {done}, ...) for {num_seeds} seeds after {done} "
                             "updates")
    root = Path(run_dir).resolve() / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    remove_incomplete(run_dir)
    tmp = _temporary(root, str(done))
    tmp.mkdir()
    try:
        _write_state(tmp, state, metrics)
        faults.pause_point("save")  # the state is written, the metadata not yet
        meta = {
            "format": FORMAT,
            "algo": config.algo,
            "config": {k: _jsonable(v) for k, v in config.to_dict().items()},
            "purerl_version": purerl.__version__,
            "updates_done": done,
            "num_seeds": num_seeds,
            "seed": seed,
            "fingerprint": fingerprint(state),
            "metrics": {k: [str(v.dtype), list(v.shape)] for k, v in metrics.items()},
            "files": _files(tmp),
            "extra": dict(extra or {}),
        }
        _write_metadata(tmp, meta)
        final = root / str(done)
        if final.exists():  # e.g. a run resumed from an earlier checkpoint: replace it
            remove(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, path in checkpoints(run_dir)[:-keep]:
        remove(path)
    return final


def _write_state(tmp: Path, state: Any, metrics: dict[str, np.ndarray]) -> None:
    """The orbax directory ``tmp/state`` of ``state`` and ``metrics``; an OSError (one line,
    :class:`CheckpointWriteError` where orbax raised another kind) if it cannot be written."""
    # lazy: orbax takes seconds to import, and purerl's command line imports this module before
    # it checks its input (purerl.cli imports orbax itself once the input is valid)
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    try:
        # orbax restores typed keys by generator name, and refuses zero-size arrays
        stored = _storable(prng.to_default(state))
        item = {"state": stored, "metrics": metrics} if metrics else {"state": stored}
        with _orbax_errors_raised_not_logged():
            checkpointer.save(tmp / _STATE, item)
            checkpointer.wait_until_finished()
    except Exception as e:  # orbax reports a full disk as a ValueError, among others
        raise _write_error(e, tmp) from None
    finally:
        checkpointer.close()


def _write_metadata(tmp: Path, meta: dict[str, Any]) -> None:
    """``meta`` with its checksum as ``tmp``'s metadata file, on disk before it returns."""
    meta["checksum"] = checksum(meta)
    with (tmp / METADATA).open("w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _temporary(root: Path, tag: str) -> Path:
    """A hidden name in ``root`` that says which process made it (see remove_incomplete)."""
    return root / f"{_TMP}{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove(ckpt: Path) -> None:
    """Remove a checkpoint by first renaming it out of the numbered names (one atomic step), so
    a process killed while deleting its files never leaves a numbered folder that holds part of
    a checkpoint: what is left is a hidden temporary folder, removed by a later save."""
    doomed = _temporary(ckpt.parent, "old")
    try:
        ckpt.rename(doomed)
    except FileNotFoundError:  # removed meanwhile
        return
    faults.pause_point("prune")
    shutil.rmtree(doomed, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_incomplete(run_dir: str | os.PathLike, every_process: bool = False) -> None:
    """Remove what a process killed while saving or pruning left in ``RUN_DIR/checkpoints``: the
    hidden temporary folders of processes that are no longer running (of every process with
    ``every_process``, for a caller holding the run directory's lock), and numbered folders
    without the metadata file (earlier purerl deleted old checkpoints in place, and a kill in the
    middle left such folders). Neither is ever restored; this only frees their space."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(_TMP):
            parts = path.name.rsplit("-", 2)
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
            if every_process or pid is None or pid == os.getpid() or not _alive(pid):
                shutil.rmtree(path, ignore_errors=True)
        elif path.name.isdigit() and path.is_dir() and not (path / METADATA).exists():
            remove(path)


@contextlib.contextmanager
def _orbax_errors_raised_not_logged() -> Iterator[None]:
    """orbax's save threads log a failure (e.g. a full disk) with its whole traceback through
    absl before the save raises it; the raised error is reported (CheckpointWriteError), so
    the log would only repeat it as a hundred lines."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only or vanished directory); its
    temporary folder is removed and the run's earlier checkpoints are untouched."""


def _write_error(error: Exception, tmp: Path) -> OSError:
    """The OSError behind an orbax save failure, as one line with its errno where known."""
    if isinstance(error, OSError):
        return error
    text = str(error)
    found = re.search(r"os_error_code='?(\d+)", text)
    if found:
        code = int(found.group(1))
        return CheckpointWriteError(code, os.strerror(code), str(tmp))
    first = text.splitlines()[0] if text else type(error).__name__
    return CheckpointWriteError(0, f"orbax-checkpoint could not write it ({first})", str(tmp))


def _storable(tree: Any) -> Any:
    """``tree`` with every zero-size leaf (e.g. a Playground state's empty ``data.act`` when the
    model has no actuator of that kind) replaced by a scalar of its dtype: orbax refuses to save
    zero-size arrays, and they hold nothing. :func:`_rebuild` restores their shapes. Abstract
    leaves (a restore target) get an abstract scalar on the same devices."""
    def one(x):
        if math.prod(np.shape(x)) != 0:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((), x.dtype, sharding=x.sharding)
        return np.zeros((), x.dtype)

    return jax.tree.map(one, tree)


def _uncommitted(tree: Any) -> Any:
    """``tree``'s arrays (on the default device) as uncommitted arrays, like a fresh run's: a
    committed argument is compiled into the program (its sharding), so a resumed run would
    otherwise compile another chunk program than the run it continues, and a persistent
    compilation cache would miss in a new process."""
    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
            return jax.random.wrap_key_data(jnp.asarray(np.asarray(jax.random.key_data(x))),
                                            impl=jax.random.key_impl(x))
        return jnp.asarray(np.asarray(x))

    return jax.tree.map(one, tree)


def _rebuild(restored: Any, target: Any) -> Any:
    """The zero-size leaves of ``target`` (abstract, placed) as empty arrays again."""
    def one(x, t):
        if math.prod(t.shape) != 0:
            return x
        empty = np.zeros(t.shape, t.dtype)
        return jax.device_put(empty, t.sharding) if t.sharding is not None else empty

    return jax.tree.map(one, restored, target)


# ---------------------------------------------------------------------------- restoring


def find(path: str | os.PathLike) -> Path:
    """The checkpoint directory ``path`` names: itself, or the newest complete checkpoint of a
    run directory; CheckpointError if there is none."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run directory written by "
                              "'purerl train' (or one of its checkpoints/<updates> directories)")
    if (path / METADATA).is_file():
        return path
    if path.name.isdigit() and path.parent.name == CHECKPOINTS:
        raise CheckpointError(f"checkpoint {path} is incomplete (no {METADATA}: it was never "
                              "finished or the file was removed); delete it and use the run's "
                              "previous checkpoint")
    if not (path / CHECKPOINTS).is_dir():
        raise CheckpointError(f"{path} has no {CHECKPOINTS}/ directory, so it is not a run "
                              "directory of 'purerl train' with checkpoints; train the run again "
                              "to get one")
    newest = latest(path)
    if newest is None:
        raise CheckpointError(f"{path / CHECKPOINTS} holds no complete checkpoint (a directory "
                              f"named by its update count with a {METADATA}); train the run "
                              "again")
    return newest


def _corrupt(ckpt: Path, problem: str) -> CheckpointError:
    previous = [p for n, p in checkpoints(ckpt.parent.parent) if n < _number(ckpt)]
    if ckpt.parent.name == CHECKPOINTS and previous:
        fix = (f"delete {ckpt} to fall back to the previous checkpoint {previous[-1].name} "
               "(its later updates are then trained again)")
    else:
        fix = "the run cannot be restored from it; train it again"
    return CheckpointError(f"checkpoint {ckpt} is corrupt: {problem}; {fix}")


def _number(ckpt: Path) -> int:
    return int(ckpt.name) if ckpt.name.isdigit() else -1


def read_metadata(ckpt: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """The metadata of the checkpoint directory ``ckpt``, checked against its own checksum; with
    ``verify`` every file of the checkpoint is checked against its recorded sha256 too."""
    ckpt = Path(ckpt)
    try:
        meta = json.loads((ckpt / METADATA).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {METADATA}: it is not a complete checkpoint; "
                              "use a run directory or another checkpoint") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(ckpt, f"its {METADATA} is unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("checksum") != checksum(meta):
        raise _corrupt(ckpt, f"its {METADATA} does not match its checksum (modified)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} has layout format {meta.get('format')!r}, "
                              f"this purerl {purerl.__version__} reads format {FORMAT}; use "
                              f"purerl {meta.get('purerl_version')} to read it")
    if verify:
        for rel, digest in meta["files"].items():
            file = ckpt / rel
            if not file.is_file():
                raise _corrupt(ckpt, f"file {rel} is missing")
            if _sha256(file) != digest:
                raise _corrupt(ckpt, f"file {rel} does not match its recorded sha256 "
                                     "(truncated or modified)")
    return meta


def _config_of(meta: Mapping[str, Any], ckpt: Path) -> Any:
    try:
        module = purerl.get_algorithm(meta["algo"])
        return module.Config.from_dict(meta["config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {ckpt} has a config this purerl "
                              f"{purerl.__version__} does not accept ({e}); use purerl "
                              f"{meta.get('purerl_version')} to read it") from None


def _check_config(saved: Any, wanted: Any, ckpt: Path, updates_done: int) -> None:
    """CheckpointError unless ``wanted`` may continue the run of ``saved``: every field equal but
    ``total_timesteps``, which may change only where no schedule depends on it."""
    if type(wanted) is not type(saved):
        raise CheckpointError(f"checkpoint {ckpt} is a {saved.algo} run, not a {wanted.algo} "
                              f"run; restore it with a {saved.algo} config (or none)")
    for name in saved.field_names():
        old, new = getattr(saved, name), getattr(wanted, name)
        if name == "total_timesteps" or old == new:
            continue
        traced = name in saved.hparam_names()
        why = ("the checkpoint's state holds the traced hyperparameters it trained with" if traced
               else "a static field fixes shapes or control flow")
        raise CheckpointError(f"{name}={new!r} differs from the {name}={old!r} that checkpoint "
                              f"{ckpt} was trained with, and {why}; set {name}={old!r} again to "
                              "resume (or train a new run)")
    if wanted.total_timesteps != saved.total_timesteps:
        schedules = saved.budget_schedules()
        if schedules:
            raise CheckpointError(
                f"cannot change the budget of this {saved.algo} run from total_timesteps="
                f"{saved.total_timesteps} to {wanted.total_timesteps}: {'; '.join(schedules)}, "
                "so the updates already done would have differed; only runs whose schedules do "
                "not depend on the budget can change it: train a new run with the budget you "
                "want")
        new_updates = _make_agent(wanted).num_updates
        if new_updates < updates_done:
            raise CheckpointError(
                f"total_timesteps={wanted.total_timesteps} is {new_updates} updates, fewer than "
                f"the {updates_done} checkpoint {ckpt} has done; pass a larger budget")


def _resize_buffers(state: Any, target: Any) -> Any:
    """``state`` with every replay buffer padded (or cut) to the capacity of the matching buffer
    in ``target``: the capacity of a buffer larger than the run is its number of transitions,
    so a budget change changes it. A buffer of a run's own length has never wrapped around, so
    its filled slots ``0 .. size - 1`` keep their place and the next write goes to ``size``, as
    in a run with the larger buffer from the start."""
    def is_buffer(x):
        return isinstance(x, ReplayBuffer)

    def resize(buf, tgt):
        if not is_buffer(buf):
            return buf
        # leaves are [seeds, capacity, ...]
        old, new = (jax.tree.leaves(b.data)[0].shape[1] for b in (buf, tgt))
        if old == new:
            return buf
        size = np.asarray(buf.size)
        if (size > new).any() or ((size == old) & (np.asarray(buf.position) != 0)).any():
            raise CheckpointError("a replay buffer of the checkpoint does not fit the new "
                                  "budget; train a new run")

        def fit(x):
            x = np.asarray(x)
            if new < old:
                return x[:, :new]
            pad = np.zeros((x.shape[0], new - old) + x.shape[2:], x.dtype)
            return np.concatenate([x, pad], axis=1)

        return buf.replace(data=jax.tree.map(fit, buf.data),
                           position=(size % new).astype(np.asarray(buf.position).dtype))

    return jax.tree.map(resize, state, target, is_leaf=is_buffer)


@dataclasses.dataclass(eq=False)
class RestoredRun:
    """A restored checkpoint: the run's config and agent, every seed's train state and the
    metrics of the updates done (:class:`purerl.inference.LoadedRun` adds its policy)."""

    path: Path  # the checkpoint directory
    algo: str
    config: Any  # the trainer's Config (with the new budget if one was asked for)
    agent: loop.Agent
    state: Any  # every seed's train state (leading seed axis)
    metrics: dict[str, np.ndarray]  # [seeds, updates_done]
    updates_done: int
    seed: int | None  # the base seed the run's keys were split from, where recorded
    metadata: dict[str, Any]

    @property
    def num_seeds(self) -> int:
        return _num_seeds(self.state)

    @property
    def run_dir(self) -> Path | None:
        """The run directory the checkpoint belongs to (None for a checkpoint elsewhere)."""
        return self.path.parent.parent if self.path.parent.name == CHECKPOINTS else None

    def seed_state(self, seed: int) -> Any:
        """The train state of seed ``seed`` (no seed axis)."""
        return jax.tree.map(lambda x: x[seed], self.state)


def _placed(target: Any, sharding: Any) -> Any:
    """``target`` with a sharding on every leaf: orbax otherwise restores onto the devices the
    checkpoint was saved from, and refuses when this process has other devices."""
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    pick = sharding if callable(sharding) else (lambda _: sharding)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=pick(x)),
                        target)


def restore(path: str | os.PathLike, config: Any = None, *, algo: str | None = None,
            total_timesteps: int | None = None,
            sharding: jax.sharding.Sharding | Callable[[Any], jax.sharding.Sharding] | None = None
            ) -> RestoredRun:
    """Restore a checkpoint: ``path`` is a run directory (its newest complete checkpoint) or one
    checkpoint directory (``RUN_DIR/checkpoints/<updates>``).

    ``algo``: the algorithm the caller expects. ``config`` (a Config or dict of the run's
    algorithm): the config the caller means to continue with; every field must equal the saved
    one except ``total_timesteps``, which may differ where the config has no budget-dependent
    schedule (:meth:`purerl.config.BaseConfig.budget_schedules`) -- replay buffers are resized
    to the new budget. ``total_timesteps``: shorthand for the saved config with a new budget.
    Continue training with ``loop.run_chunked(run.agent, None, chunk=K, state=run.state)``.
    ``sharding``: where the state's arrays go (a ``jax.sharding.Sharding``, or a function of a
    leaf's ``jax.ShapeDtypeStruct`` returning one); default: the default device, uncommitted
    like a fresh run's arrays (so the run continues with the program it compiled). Checkpoints
    hold whole arrays, so a state saved sharded over any number of devices restores onto any other
    (:func:`purerl.distributed.restore`). Raises :class:`CheckpointError` (one line) for every
    problem, before reading any array."""
    for attempt in range(5):
        ckpt = find(path)
        try:
            return _restore(ckpt, path, config, algo, total_timesteps, sharding)
        except CheckpointError:
            if (ckpt / METADATA).is_file():
                raise
            # removed while it was read: a process still training this run pruned it (--keep)
            if ckpt == Path(path) or attempt == 4:
                raise CheckpointError(f"checkpoint {ckpt} was removed while it was being read "
                                      "(the run is still training and keeps only its newest "
                                      "checkpoints: --keep); read the run directory again to "
                                      "get its newest one") from None
    raise AssertionError("unreachable")


def _restore(ckpt: Path, path: str | os.PathLike, config: Any, algo: str | None,
             total_timesteps: int | None, sharding: Any) -> RestoredRun:
    """:func:`restore` of the checkpoint directory ``ckpt`` (found from ``path``)."""
    meta = read_metadata(ckpt)
    saved, wanted = _wanted_config(meta, ckpt, path, config, algo, total_timesteps)
    done, num_seeds = int(meta["updates_done"]), int(meta["num_seeds"])
    agent = _make_agent(saved)
    target = _target(agent, num_seeds)
    if fingerprint(target) != meta["fingerprint"]:
        raise CheckpointError(
            f"checkpoint {ckpt} holds a train-state layout (saved by purerl "
            f"{meta['purerl_version']}) that this purerl {purerl.__version__} does not build for "
            f"its {saved.algo} config; restore it with purerl {meta['purerl_version']}, or "
            "train a new run")
    state, metrics = _read_state(ckpt, meta, target, sharding)
    if wanted is not saved:
        agent = _make_agent(wanted)
        new_target = _target(agent, num_seeds)
        state = _resize_buffers(state, new_target)
        if fingerprint(state) != fingerprint(new_target):
            raise CheckpointError(f"the train state of checkpoint {ckpt} does not fit "
                                  f"total_timesteps={wanted.total_timesteps}; train a new run")
    return RestoredRun(ckpt, saved.algo, wanted, agent, state, metrics, done, meta.get("seed"),
                       meta)


def _wanted_config(meta: Mapping[str, Any], ckpt: Path, path: str | os.PathLike, config: Any,
                   algo: str | None, total_timesteps: int | None) -> tuple[Any, Any]:
    """The checkpoint's config and the one to continue with (``config``, ``total_timesteps``:
    see :func:`restore`; the saved one itself where neither is given); CheckpointError unless
    the second may continue the run."""
    if algo is not None and algo != meta["algo"]:
        raise CheckpointError(f"{path} is a {meta['algo']} run, not a {algo} run; restore it as "
                              f"{meta['algo']} (purerl.load finds the algorithm itself)")
    saved = _config_of(meta, ckpt)
    wanted = saved
    if config is not None:
        if isinstance(config, BaseConfig) and config.algo != saved.algo:
            raise CheckpointError(f"{path} is a {saved.algo} run, not a {config.algo} run; "
                                  f"restore it with a {saved.algo} config (or none)")
        try:
            wanted = type(saved).coerce(config)
        except ValueError as e:
            raise CheckpointError(f"the config given to restore {ckpt} is invalid: {e}") from None
    if total_timesteps is not None:
        try:
            wanted = wanted.replace(total_timesteps=int(total_timesteps))
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    _check_config(saved, wanted, ckpt, int(meta["updates_done"]))
    return saved, wanted


def _read_state(ckpt: Path, meta: Mapping[str, Any], target: Any, sharding: Any
                ) -> tuple[Any, dict[str, np.ndarray]]:
    """The state (shaped like ``target``, placed by ``sharding``) and the metrics saved in the
    checkpoint ``ckpt`` with the metadata ``meta``, whose files have been verified."""
    # lazy: orbax takes seconds to import (see _write_state)
    import orbax.checkpoint as ocp

    metric_target = {name: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                     for name, (dtype, shape) in meta["metrics"].items()}
    placed = _placed(prng.to_default(target), sharding)
    checkpointer = ocp.StandardCheckpointer()
    try:
        wanted_item = {"state": _storable(placed)}  # as save wrote it
        if metric_target:  # none when save was given no metrics
            wanted_item["metrics"] = metric_target
        item = checkpointer.restore(ckpt.resolve() / _STATE, wanted_item)
    except Exception as e:  # orbax raises many kinds; all mean "unreadable"
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise CheckpointError(f"orbax-checkpoint could not read checkpoint {ckpt} although its "
                              f"files match their recorded sha256 ({detail}); use the "
                              "orbax-checkpoint version purerl requires (>=0.12,<0.13)") from None
    finally:
        checkpointer.close()
    state = _rebuild(item["state"], placed)
    if sharding is None:
        state = _uncommitted(state)
    state = prng.to_unrolled(state)
    return state, {k: np.asarray(v) for k, v in item.get("metrics", {}).items()}
