"""The -m workers run a few nice steps below the server process (``--worker-nice``).

The server process relays every PDK call between Kong and the workers, for microseconds at a
time; a worker may compute for milliseconds. At equal priority a woken server (or Kong)
often waits for a computing worker's time slice to end, so every call of every event queues
behind someone's computation and the workers then idle while calls are in flight. A few
steps lower, a worker gives way at once to whoever relays or answers, and still gets every
cycle nobody else wants. Like nginx's ``worker_priority``, but relative to the server: one
started with ``nice -n 2`` gets workers at 2 + N.
"""

from __future__ import annotations

import os

DEFAULT_WORKER_NICE = 5
LOWEST_WORKER_NICE = 19  # the kernel's lowest priority, for a server at the default 0
WORKER_NICE_RANGE = range(LOWEST_WORKER_NICE + 1)  # from 0, the server's own priority


def lower_priority(steps: int) -> None:
    """Make this process ``steps`` nice steps less favoured (0: leave it alone).

    Call it before the process starts threads: Linux keeps a nice value per thread, and a new
    thread inherits its creator's. Lowering needs no privilege; the kernel stops at 19.
    """
    if steps:
        os.nice(steps)
