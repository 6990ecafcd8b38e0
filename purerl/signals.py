"""SIGINT and SIGTERM as exceptions, for the command line.

SIGTERM is how ``kill``, Slurm and Kubernetes stop a job; by default it ends a Python process on
the spot, with no message and no cleanup. Two phases:

* while the command starts (imports jax, checks its input: nothing is written yet),
  ``install(starting=True)`` ends the process at once with one line -- ``python -m purerl``
  installs it before anything imports jax (this module imports nothing heavy);
* once ``train`` / ``resume`` hold their run directory, :func:`interrupting` makes both signals
  raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread, so the command can
  say where the run stands and leave it resumable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

__all__ = ["Interrupted", "install", "interrupting", "raise_if_interrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# the last signal :func:`interrupting` turned into an exception: Python runs a signal handler
# wherever the main thread is at the next bytecode, and where that is inside a garbage-collector
# callback (jax's ``_xla_gc_callback`` runs while XLA compiles) or a ``__del__``, Python prints
# "Exception ignored" and carries on; raise_if_interrupted raises it again
_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread like Python's own KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    # every signal raises (none is ignored after the first): code that swallows an exception
    # with a bare except must not leave the process unstoppable but by SIGKILL
    global _received
    _received = signum
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived since :func:`interrupting` began: its own
    exception may have been swallowed (a garbage-collector callback, a ``__del__``, a bare
    ``except``). The training loop calls it after every chunk."""
    if _received is not None:
        raise Interrupted(_received)


def _exit_while_starting(signum: int, frame: Any) -> None:
    # while modules are imported nothing has been written, and an exception raised into an
    # import can be swallowed by a bare except or turned into an ImportError by an extension
    # module: say so and end the process on the spot
    os.write(2, f"purerl: interrupted ({signal.Signals(signum).name}) while starting; nothing "
                "was written\n".encode())
    os._exit(128 + signum)


def install(starting: bool = False) -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (``starting``: end the process at once
    with one line, for the seconds of importing jax); returns the previous handlers. A signal
    the process was started ignoring (SIGINT in a background job of a non-interactive shell)
    stays ignored; outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _exit_while_starting if starting else _raise_interrupted)
    return previous


@contextlib.contextmanager
def interrupting() -> Iterator[None]:
    """:func:`install` for the ``with`` block, then the previous handlers again."""
    global _received
    _received = None
    previous = install()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received = None


def exit_code(error: KeyboardInterrupt) -> int:
    """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report it."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def name(error: KeyboardInterrupt) -> str:
    return signal.Signals(getattr(error, "signum", signal.SIGINT)).name
