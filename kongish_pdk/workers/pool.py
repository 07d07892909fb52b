"""A bounded pool of OS threads that start on demand and are reused, and a thread hand-off.

Cheaper per task than ``concurrent.futures`` (no Future per call), which matters because
every HandleEvent and StartInstance goes through it.
"""

from __future__ import annotations

import logging
import queue
import threading
from _thread import allocate_lock
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kongish_pdk.workers")

_Task = tuple[Callable[..., Any], tuple[Any, ...]] | None


class LockSlot:
    """A plain one-value hand-off between threads: ``take`` blocks until ``put`` (a
    ``runtime.handler.Slot``). For waits with no connection to hand over (unlike the threads
    mode's ConnectionSlot): a worker process's handlers waiting for RESUME, and the server's
    requests waiting for a worker process's DONE.
    """

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()
        self._value: Any = None

    def put(self, value: Any) -> None:
        self._value = value
        self._lock.release()

    def take(self) -> Any:
        self._lock.acquire()
        value, self._value = self._value, None
        return value


class ThreadPool:
    def __init__(self, max_threads: int, name: str = "kongish-worker") -> None:
        if max_threads < 1:
            raise ValueError("a thread pool needs at least one thread")
        self.max_threads = max_threads
        self._name = name
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a task that no submit has claimed yet
        self._warned = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                start = False
            elif self._threads < self.max_threads:
                self._threads += 1
                start = True
            else:
                start = False
                if not self._warned:
                    self._warned = True
                    log.warning("all %d threads are busy; new work waits (raise --threads)",
                                self.max_threads)
        self._tasks.put((fn, args))
        if start:
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            fn, args = task
            try:
                fn(*args)
            except BaseException:
                log.exception("unexpected error in a worker thread")
            del task, fn, args  # do not keep the last task's objects alive while idle
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Let idle threads exit (busy ones finish their task first)."""
        for _ in range(self._threads):
            self._tasks.put(None)
