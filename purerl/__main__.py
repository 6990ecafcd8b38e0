"""``python -m purerl``: the command line (see :mod:`purerl.cli`)."""

from purerl.cli import entry

if __name__ == "__main__":
    entry()
