"""Peak-memory reading shared by the benchmark scripts (run them as ``python benchmarks/X.py``)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS in MiB of this process (``RUSAGE_SELF``) or of its largest waited-for child.

    For this process, VmHWM from /proc: Linux carries ``ru_maxrss`` across ``exec``, so a child
    started by a big parent would report the parent's peak, not its own.
    """
    if who == resource.RUSAGE_SELF:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB
