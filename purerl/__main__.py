"""``python -m purerl`` and the ``purerl`` command (see :mod:`purerl.cli`).

SIGINT and SIGTERM handlers are installed before anything imports jax, which takes seconds: an
interrupt while the command is still starting ends it with one line, like any other."""

from __future__ import annotations

from typing import NoReturn

from purerl import signals


def main() -> NoReturn:
    signals.install(starting=True)
    from purerl.cli import entry  # after the handlers: purerl.cli imports jax (seconds)

    entry()


if __name__ == "__main__":
    main()
