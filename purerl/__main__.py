"""``python -m purerl``: the command line (see :mod:`purerl.cli`)."""

import sys

from purerl.cli import main

if __name__ == "__main__":
    sys.exit(main())
