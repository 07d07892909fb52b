"""Open file descriptors, resident memory and CPU time of a process and its descendants, and
the CPU time other guests took from this machine (/proc)."""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (FileNotFoundError if ``pid`` itself is gone)."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children.extend(int(c) for c in listing.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    tree = [pid]
    for child in children:
        try:
            tree += process_tree(child)
        except FileNotFoundError:  # the child exited meanwhile
            continue
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants (all of
    them: the -m forkserver's pool children are grandchildren)."""
    ticks = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except FileNotFoundError:  # exited meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (after the comm field)
    return ticks / TICK


def host_cpu_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor for other guests, all ticks), summed over the CPUs
    since boot. Between two readings: the share of the machine a benchmark did not get."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]  # the "cpu" line: all CPUs
    # user nice system idle iowait irq softirq steal (guest times are inside user and nice)
    return fields[7], sum(fields[:8])


def stolen_since(before: tuple[int, int]) -> float:
    """The share (0-1) of the host's CPU time stolen since ``before`` (a host_cpu_ticks())."""
    stolen, total = (now - then for then, now in zip(before, host_cpu_ticks(), strict=True))
    return stolen / max(total, 1)


def resources(pids: list[int]) -> tuple[int, int]:
    """(open file descriptors, resident memory in KiB), summed over ``pids``.

    A handler thread's wake-up eventfd lives as long as the thread (the pool is bounded by
    --threads), so eventfds are checked against the thread count and not counted as fds:
    anything that grows per request still shows.
    """
    fds = rss = 0
    for pid in pids:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        per_thread = sum(1 for link in links if link == "anon_inode:[eventfd]")
        threads = len(os.listdir(f"/proc/{pid}/task"))
        assert per_thread <= threads, f"{per_thread} eventfds for {threads} threads in {pid}"
        fds += len(links) - per_thread
        with open(f"/proc/{pid}/status") as status:
            rss += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss
