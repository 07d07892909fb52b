"""Giving memory back to the OS after a burst.

Two things keep a finished burst (a thousand parked handlers, their stacks and buffers) in
the process: reference cycles that Python's cyclic collector only visits after enough new
allocations (which stop when the burst is over), and glibc keeping freed memory for reuse.
Either way the server's size never comes down and looks like a leak in monitoring. So when
nothing is in flight, at most every few seconds: collect cycles, then ask glibc to return
what it holds free (malloc_trim; elsewhere than glibc only the collection happens).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("kongish_pdk.server")

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
REPORT_KIB = 1024  # say so in the log when at least this much went back


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


class MemoryTrimmer:
    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._trim = _malloc_trim()
        self._last = time.monotonic()

    def tick(self, idle: bool) -> None:
        """Call from housekeeping; trims only when ``idle`` and not too often."""
        now = time.monotonic()
        if not idle or now - self._last < self.interval:
            return
        self._last = now
        before = resident_kib()
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        released = before - resident_kib()
        if released >= REPORT_KIB:
            log.info("returned %d KiB of freed memory to the OS", released)
