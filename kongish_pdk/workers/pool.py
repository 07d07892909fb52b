"""A bounded pool of OS threads that start on demand and are reused.

Cheaper per task than ``concurrent.futures`` (no Future per call), which matters because
every HandleEvent and StartInstance goes through it.

A pool thread can also keep work for itself: :meth:`ThreadPool.defer` runs a function on the
calling pool thread right after its current task, and inside :meth:`ThreadPool.capturing`
``submit`` does the same instead of waking another thread. The I/O loop uses this to let the
thread that finished a ProtoBuf:1 event read the next call on its connection and run that
event's handler itself (see ``selector_loop``), with no hand-off between threads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kongish_pdk.workers")

_Task = tuple[Callable[..., Any], tuple[Any, ...]] | None


class _Capturing:
    """``with pool.capturing():`` (a plain class: cheaper than a generator per event)."""

    __slots__ = ("_local",)

    def __init__(self, local: threading.local) -> None:
        self._local = local

    def __enter__(self) -> None:
        self._local.capture = True

    def __exit__(self, *exc: object) -> None:
        self._local.capture = False


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
        self._local = threading.local()  # per pool thread: "later" (deferred tasks), "capture"

    @property
    def size(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if getattr(self._local, "capture", False):
            self._local.later.append((fn, args))
            return
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

    def defer(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn`` on this pool thread once its current task returns; False (and nothing
        scheduled) when not called from one of this pool's threads."""
        later: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = getattr(
            self._local, "later", None)
        if later is None:
            return False
        later.append((fn, args))
        return True

    def capturing(self) -> _Capturing:
        """In a pool thread's deferred task: work submitted meanwhile runs on this thread
        after the task, instead of waking another one. Nothing inside may wait for it."""
        return _Capturing(self._local)

    def _work(self) -> None:
        later: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._local.later = later
        while True:
            task = self._tasks.get()
            if task is None:
                return
            self._run(*task)
            while later:  # deferred by the task itself: same thread, no hand-off
                self._run(*later.pop(0))
            del task  # do not keep the last task's objects alive while idle
            with self._lock:
                self._idle += 1

    @staticmethod
    def _run(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException:
            log.exception("unexpected error in a worker thread")

    def shutdown(self) -> None:
        """Let idle threads exit (busy ones finish their task first)."""
        for _ in range(self._threads):
            self._tasks.put(None)
