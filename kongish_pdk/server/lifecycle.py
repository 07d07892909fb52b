"""Process lifecycle: stop when Kong's worker (our parent) dies, and a bounded drain.

Kong's nginx worker 0 spawns the server and sends SIGTERM on reload or stop. If the worker
crashes instead, a new worker 0 starts a new server on the same socket, so the old one must
go: the kernel sends us SIGTERM when the parent dies (PR_SET_PDEATHSIG), and every tick also
compares getppid() with the parent we started with (a check for getppid() == 1 would be
wrong under subreapers and for servers a supervisor with PID 1 started on purpose).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger("kongish_pdk.server")

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` when the parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; relying on the parent check")


class ParentWatch:
    def __init__(self) -> None:
        self.ppid = os.getppid()

    def parent_gone(self) -> bool:
        return os.getppid() != self.ppid
