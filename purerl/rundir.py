"""Run directories of the command line: the lock held while a process writes one, result files
written atomically, and the state a directory is in.

The promise (README, "Faults and signals"): whatever stops a ``purerl train`` or ``resume``
process, whenever, its run directory is in one of three states:

* **finished**: every result file (:data:`RESULTS`) is complete;
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
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["LOCK", "RESULTS", "RunDirBusy", "lock", "missing_results", "write_atomic",
           "write_text"]

RESULTS = ("metrics.json", "metrics.csv", "summary.txt", "learning_curve.png")
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
    from purerl import checkpoint

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


def missing_results(run_dir: str | os.PathLike) -> list[str]:
    """The result files (:data:`RESULTS`) ``run_dir`` does not hold."""
    return [name for name in RESULTS if not (Path(run_dir) / name).is_file()]


_passed: dict[str, int] = {}


def pause_point(name: str) -> None:
    """A hook for the fault tests (tests/test_faults.py): where the environment variable
    ``PURERL_PAUSE_AT`` is ``name`` or ``name:N`` (the N-th time this point is passed), write
    the file named by ``PURERL_PAUSE_FILE`` and wait while it exists, so that a test can kill,
    starve or lock the process at exactly this moment. Does nothing otherwise."""
    spec = os.environ.get("PURERL_PAUSE_AT")
    if not spec or spec.partition(":")[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    wanted = int(spec.partition(":")[2] or 1)
    marker = os.environ.get("PURERL_PAUSE_FILE")
    if _passed[name] != wanted or not marker:
        return
    Path(marker).write_text(str(os.getpid()))
    while Path(marker).exists():
        time.sleep(0.02)

