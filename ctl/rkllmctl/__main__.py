"""Console-script entry: ``rkllmctl = "rkllmctl.__main__:main"``."""

from __future__ import annotations

import sys

from .cli import run
from .context import ExitCode

__all__ = ["main", "run"]


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
