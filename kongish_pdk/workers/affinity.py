"""Pinning the processes that run Python handlers to one CPU each (``--cpu-affinity``).

A process runs Python under one GIL, so its handlers never use more than one core at once.
Left to the kernel, its threads are spread over the cores and every GIL hand-off wakes a
thread on another core: on the benches, cores sat idle while events waited and the server
spent half its CPU time switching (docs/performance.md). Pinned, the hand-offs stay on one
core. The trade: C code that releases the GIL (large hashes, compression) no longer spreads
over other cores, which is what ``-m`` or ``--cpu-affinity off`` are for.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("kongish_pdk.workers")

CHOICES = ("auto", "off")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container's cpuset, taskset), in order."""
    return sorted(os.sched_getaffinity(0))


def server_cpu(affinity: str) -> int | None:
    """The CPU for a server that runs its handlers itself: the last usable one, away from
    CPU 0, where interrupts and nginx's first worker tend to be; ``off``: none."""
    return None if affinity == "off" else usable_cpus()[-1]


def worker_cpus(workers: int, affinity: str) -> list[int | None]:
    """The CPU of each worker process: the usable CPUs in turn, like nginx's
    ``worker_cpu_affinity auto``; ``off`` leaves placement to the kernel."""
    if affinity == "off":
        return [None] * workers
    cpus = usable_cpus()
    return [cpus[index % len(cpus)] for index in range(workers)]


def pin_process(cpu: int | None) -> None:
    """Keep this process on one CPU: its threads now, and the threads they start later.
    ``None`` (``--cpu-affinity off``) leaves placement to the kernel."""
    if cpu is None:
        return
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except OSError as exc:  # a thread that just ended, or a cpuset that changed
            if int(task) == threading.get_native_id():
                log.warning("process %d cannot be pinned to CPU %d: %s", os.getpid(), cpu, exc)
                return
    log.info("process %d pinned to CPU %d", os.getpid(), cpu)
