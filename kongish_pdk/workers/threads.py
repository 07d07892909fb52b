"""threads mode (default): one I/O thread, plugin handlers on a bounded pool of OS threads.

Handlers may block (sockets, ``time.sleep``, database clients) without stalling other events;
no lock is held around plugin code, so they run concurrently up to ``--threads``. The I/O loop
lends connections to the pool's threads (``SelectorLoop(pool=...)``): a protocol whose event
owns its connection (ProtoBuf:1) then reads Kong's answers on the handler's own thread.
"""

from __future__ import annotations

import signal
from _thread import allocate_lock
from typing import Any, ClassVar

from kongish_pdk.runtime.events import Executor
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.server.selector_loop import SelectorLoop
from kongish_pdk.workers.base import ServeContext, Worker
from kongish_pdk.workers.pool import ThreadPool

# Kong keeps up to 256 pooled connections per nginx worker; each in-flight event holds a
# thread while it waits for its Step, so the default covers two busy Kong workers.
DEFAULT_THREADS = 512


class LockSlot:
    """The cheapest cross-thread hand-off: a lock the taker blocks on until the putter
    releases it."""

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


class ThreadWorker(Worker):
    name: ClassVar[str] = "threads"

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.pool = ThreadPool(threads)
        self._loop: SelectorLoop | None = None
        self._stop_requested = False

    def create_executor(self, lua_style: bool) -> Executor:
        return LocalExecutor(self.pool.submit, LockSlot, lua_style)

    def serve(self, ctx: ServeContext) -> None:
        self._loop = SelectorLoop(ctx, pool=self.pool)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        if self._stop_requested:  # a signal arrived while plugins were loading
            self._loop.stop()
        try:
            self._loop.run()
        finally:
            self.pool.shutdown()

    def stop(self) -> None:
        self._stop_requested = True
        if self._loop is not None:
            self._loop.stop()
