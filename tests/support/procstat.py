"""Open file descriptors and resident memory of a process and its descendants (/proc)."""

from __future__ import annotations

import os


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            children.extend(int(c) for c in listing.read().split())
    return [pid, *(p for child in children for p in process_tree(child))]


def resources(pids: list[int]) -> tuple[int, int]:
    """(open file descriptors, resident memory in KiB), summed over ``pids``."""
    fds = rss = 0
    for pid in pids:
        fds += len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as status:
            rss += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss
