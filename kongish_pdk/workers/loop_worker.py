"""The serving part shared by the threads and processes modes: the epoll I/O loop."""

from __future__ import annotations

import signal

from kongish_pdk.server.io_loop import IOLoop
from kongish_pdk.workers.base import ServeContext, Worker


class IOLoopWorker(Worker):
    """A worker whose connections are read by :class:`IOLoop` on the main thread."""

    def __init__(self) -> None:
        self._loop: IOLoop | None = None
        self._stop_requested = False

    def serve(self, ctx: ServeContext) -> None:
        self._loop = IOLoop(ctx)
        self.loop_started(self._loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        if self._stop_requested:  # a signal arrived while plugins were loading
            self._loop.stop()
        try:
            self._loop.run()
        finally:
            self.loop_finished()

    def stop(self) -> None:
        self._stop_requested = True
        if self._loop is not None:
            self._loop.stop()

    def loop_started(self, loop: IOLoop) -> None:
        """Hook: the loop exists, nothing is served yet."""

    def loop_finished(self) -> None:
        """Hook: the loop has drained and returned."""
