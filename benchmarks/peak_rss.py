"""A process's own peak RSS, written where the benchmark asked for it.

The peak is VmHWM from /proc/self/status: the high-water mark of this process's
memory since exec. (`ru_maxrss` of a child as read by the parent is not used:
Linux carries the pre-exec high-water mark over exec, and with vfork that is
the benchmark parent's own RSS, which grows with N.)
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

ENV = "ARCHIFY_BENCH_RSS_FILE"


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_at_exit() -> None:
    """Write this process's peak RSS to $ARCHIFY_BENCH_RSS_FILE when it exits."""
    target = os.environ.get(ENV)
    if target:
        atexit.register(lambda: Path(target).write_text(f"{peak_rss_mb():.3f}"))
