"""Open file descriptors and resident memory of a process and its descendants (/proc)."""

from __future__ import annotations

import os


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children.extend(int(c) for c in listing.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return [pid, *(p for child in children for p in process_tree(child))]


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
