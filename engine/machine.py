"""What the machine has: the memory a new allocation can take now, and sizes as people read them.
The compiler's estimates and the data reader's checks both read it; it knows neither."""
from __future__ import annotations

import os


def available() -> int | None:
    """Bytes of memory a new allocation can take now (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def human(n: float) -> str:
    """Bytes as people read them: 512 MiB, 2.3 GiB, 1.1 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
