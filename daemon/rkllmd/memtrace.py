"""Debug aid for memory investigations: tracemalloc snapshots of the daemon on demand.

Off unless ``_RKLLMD_TRACEMALLOC=DIR`` is in the daemon's environment (a name
outside ``RKLLMD_*``, which config validates: this is a debugging switch, not a
setting). When set, tracing starts as ``main()`` begins (module imports are
already done; what grows later is what matters) and every SIGUSR1 writes one
snapshot, ``DIR/snapshot-NNN.pickle``, numbered in order.
``bench/soak.py --snapshot-minutes`` drives it and compares the dumps.

The snapshot is taken in the signal handler, on the main thread between two
bytecodes: it pauses the event loop for as long as the dump takes (tens of ms),
which is acceptable for a debugging run and keeps the daemon free of threads.
"""

from __future__ import annotations

import logging
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

ENV = "_RKLLMD_TRACEMALLOC"
# Enough frames to tell which caller of a shared helper allocates.
FRAMES = 8

logger = logging.getLogger(__name__)


def install_from_env() -> None:
    """Start tracing and arm SIGUSR1 when the environment asks for it."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        write_snapshot(target)

    signal.signal(signal.SIGUSR1, dump)


def write_snapshot(directory: Path) -> Path:
    """Dump the current snapshot under the next free number (written whole, then renamed)."""
    number = len(list(directory.glob("snapshot-*.pickle")))
    final = directory / f"snapshot-{number:03d}.pickle"
    partial = final.with_suffix(".part")
    tracemalloc.take_snapshot().dump(str(partial))
    partial.replace(final)
    logger.info("tracemalloc snapshot %s (traced %d bytes)", final.name, _traced())
    return final


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0]
