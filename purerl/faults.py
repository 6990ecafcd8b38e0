"""The hook of the fault tests (tests/test_faults.py): named points where a ``purerl train`` or
``resume`` process can be made to wait, so that a test kills, starves or locks it at exactly
that moment. A leaf module (it imports nothing of purerl): checkpoints, run directories and the
training driver all pass such points."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["pause_point"]

_passed: dict[str, int] = {}


def pause_point(name: str) -> None:
    """Where the environment variable ``PURERL_PAUSE_AT`` is ``name`` or ``name:N`` (the N-th
    time this point is passed), write the file named by ``PURERL_PAUSE_FILE`` and wait while it
    exists. Does nothing otherwise."""
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
