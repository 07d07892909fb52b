"""threads mode (default): handlers run on a bounded pool of OS threads.

Handlers may block (sockets, ``time.sleep``, database clients) without stalling other events;
no lock is held around plugin code. A handler's thread keeps reading the connection its last
request came on (see ``server/connections.py``), so when Kong sends the next Step there, as it
usually does, the handler continues without waking any other thread. A Step that arrives
elsewhere is handed over by that connection's reader, together with the connection. Where
the protocol keeps an event on its connection (ProtoBuf:1), the handler's thread makes its
PDK calls directly on it (``DirectCalls``): no Step goes through the runtime at all.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from _thread import allocate_lock
from collections.abc import Callable
from typing import Any, ClassVar

from kongish_pdk.errors import EventStopped
from kongish_pdk.runtime.events import Answer, Event, Executor, RoundTrip
from kongish_pdk.runtime.handler import EventChannel
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.server import nogil
from kongish_pdk.server.connections import RECV_SIZE, Connection, claim, dispatch
from kongish_pdk.server.io_loop import IOLoop
from kongish_pdk.workers.affinity import pin_process, server_cpu
from kongish_pdk.workers.loop_worker import IOLoopWorker
from kongish_pdk.workers.pool import ThreadPool

# How long a thread whose handler ended waits for the next request on its connection.
LINGER = 0.002

# Kong keeps up to 256 pooled connections per nginx worker; each in-flight event holds a
# thread while it waits for its Step, so the default covers two busy Kong workers.
DEFAULT_THREADS = 512


class Waiter:
    """A handler thread's way to wait: its own wake-up eventfd, plus the connection it reads."""

    def __init__(self, loop: IOLoop) -> None:
        self.loop = loop
        self.wake_fd = -1  # created when this thread first has to wait
        self.conn: Connection | None = None
        # While its handler is done and it waits for the next request on its connection
        # (ThreadExecutor._linger): the handler it is to run next, if one came.
        self.lingering = False
        self.next: tuple[Connection | None, Callable[[], None]] | None = None
        self._poller = select.poll()
        self._receiver = nogil.Receiver(RECV_SIZE)

    def adopt(self, conn: Connection) -> None:
        """Read ``conn`` from now on (giving back the one read so far)."""
        if conn is self.conn:
            return
        self.release()
        self.conn = conn
        self._poller.register(conn.fd, select.POLLIN)

    def release(self) -> None:
        """Stop reading the current connection; the I/O loop reads it again."""
        conn, self.conn = self.conn, None
        if conn is not None:
            self._poller.unregister(conn.fd)
            self.loop.arm(conn)

    def prepare(self) -> None:
        """Ready to be woken (call before publishing this waiter to a slot)."""
        if self.wake_fd < 0:
            self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._poller.register(self.wake_fd, select.POLLIN)

    def wake(self) -> None:
        os.eventfd_write(self.wake_fd, 1)

    def wait(self, timeout_ms: int | None = None) -> None:
        """Block until woken or the connection has data (or the timeout); dispatch that data."""
        if self._poll(timeout_ms) and self.conn is not None:
            self._read(self.conn)

    def receive(self, timeout: float) -> bytes | None:
        """The next bytes of the connection this thread reads, without dispatching them (b""
        at its end, or if it has none any more); None if woken or none came in ``timeout``
        seconds."""
        if not self._poll(int(timeout * 1000) + 1):  # whole ms, rounded up, at least 1
            return None if self.conn is not None else b""
        conn = self.conn
        assert conn is not None  # _poll said it has data
        data = self._receiver.recv(conn.fd)
        if data == b"":
            self._closed(conn)
        return data

    def _poll(self, timeout_ms: int | None) -> bool:
        """Wait until woken (consuming the wake-up) or the connection has data; True if it has
        (None timeout: no limit)."""
        readable = False
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == self.wake_fd:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.wake_fd)
            elif self.conn is not None and fd == self.conn.fd:
                readable = True
        return readable

    def _read(self, conn: Connection) -> None:
        data = self._receiver.recv(conn.fd)
        if data is None:
            return
        claimed = dispatch(conn, data) if data else False
        if not data or conn.transport.closed:
            self._closed(conn)
        elif claimed:  # a request on it went to another event (or back to us)
            self._forget(conn)

    def _closed(self, conn: Connection) -> None:
        self._forget(conn)
        self.loop.close(conn)

    def _forget(self, conn: Connection) -> None:
        if self.conn is conn:
            self._poller.unregister(conn.fd)
            self.conn = None


class ConnectionSlot:
    """A Step's value for a waiting handler, optionally with the connection it came on."""

    __slots__ = ("_conn", "_lock", "_ready", "_value", "_waiter", "executor")

    def __init__(self, executor: ThreadExecutor) -> None:
        self.executor = executor
        self._lock = allocate_lock()
        self._ready = False
        self._value: Any = None
        self._conn: Connection | None = None
        self._waiter: Waiter | None = None

    def put(self, value: Any, conn: Connection | None = None) -> None:
        with self._lock:
            self._value, self._conn, self._ready = value, conn, True
            waiter = self._waiter
        if waiter is not None and not self.executor.is_current(waiter):
            waiter.wake()

    def take(self) -> Any:
        waiter = self.executor.current_waiter()
        waiter.prepare()
        while True:
            with self._lock:
                if self._ready:
                    value, conn = self._value, self._conn
                    self._value = self._conn = self._waiter = None
                    self._ready = False
                    break
                self._waiter = waiter
            waiter.wait()
        if conn is not None:
            waiter.adopt(conn)
        return value


class DirectCalls:
    """One event's PDK calls, made and answered on the connection its handler's thread reads.

    Only while that thread still reads it: after it lost the connection (closed, or handed
    on), a call returns None and goes the usual way, through the runtime and a slot. Calls
    from other threads never get here (the PDK bridge refuses them).
    """

    __slots__ = ("_channel", "_conn", "_executor", "_round_trip", "_waiter", "_waiting")

    def __init__(self, executor: ThreadExecutor, channel: EventChannel, conn: Connection,
                 round_trip: RoundTrip) -> None:
        self._executor = executor
        self._channel = channel
        self._conn = conn
        self._round_trip = round_trip
        # The handler thread's Waiter, from its first call on (the PDK bridge lets no other
        # thread call), and whether a call waits for its answer.
        self._waiter: Waiter | None = None
        self._waiting = False

    def __call__(self, name: str, args: list[Any]) -> Answer | None:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._executor.current_waiter()
            waiter.prepare()
        if waiter.conn is not self._conn:
            return None
        self._waiting = True  # before the first look at `stopped`: stop() may wake it
        try:
            return self._round_trip(name, args, self._receive)
        finally:
            self._waiting = False

    def _receive(self, timeout: float) -> bytes | None:
        waiter, channel = self._waiter, self._channel
        assert waiter is not None
        deadline = time.monotonic() + timeout
        while not channel.stopped:
            data = waiter.receive(timeout)
            if data is not None:
                return data
            timeout = deadline - time.monotonic()  # woken, or out of time
            if timeout <= 0:
                return None
        raise EventStopped(channel.stop_reason)

    def stop(self) -> None:
        """The event was stopped: wake the call waiting for its answer, if any."""
        waiter = self._waiter
        if self._waiting and waiter is not None:
            waiter.wake()


class ThreadExecutor(LocalExecutor):
    """The in-process executor, plus connections that follow their events."""

    def __init__(self, pool: ThreadPool, lua_style: bool) -> None:
        super().__init__(pool.submit, lambda: ConnectionSlot(self), lua_style)
        self.loop: IOLoop | None = None
        self._local = threading.local()

    def current_waiter(self) -> Waiter:
        """This thread's Waiter (created on first use)."""
        waiter: Waiter | None = getattr(self._local, "waiter", None)
        if waiter is None:
            assert self.loop is not None, "the I/O loop starts before any handler"
            waiter = self._local.waiter = Waiter(self.loop)
        return waiter

    def is_current(self, waiter: Waiter) -> bool:
        return getattr(self._local, "waiter", None) is waiter

    def _launch(self, event: Event, run: Callable[[], None]) -> None:
        conn = claim(event.reply)
        if conn is not None and event.round_trip is not None:
            event.handle.direct = DirectCalls(self, event.handle, conn, event.round_trip)
        waiter: Waiter | None = getattr(self._local, "waiter", None)
        if waiter is not None and waiter.lingering and waiter.next is None:
            waiter.next = (conn, run)  # this idle thread runs it as soon as dispatch ends
            return
        self._spawn(self._run_with, conn, run)

    def _run_with(self, conn: Connection | None, run: Callable[[], None]) -> None:
        waiter = self.current_waiter()
        try:
            while True:
                if conn is not None:
                    waiter.adopt(conn)
                run()
                following = self._linger(waiter)
                if following is None:
                    return
                conn, run = following
        finally:
            waiter.release()

    def _linger(self, waiter: Waiter) -> tuple[Connection | None, Callable[[], None]] | None:
        """Wait briefly for Kong's next request on our connection and take its event.

        Kong hands a worker's coroutine the connection it just returned, so the request
        after "ret" usually comes right back here; running it on this thread saves waking a
        pool thread. Anything else that arrives meanwhile is dispatched as usual.
        """
        if waiter.conn is None:
            return None
        waiter.lingering, waiter.next = True, None
        deadline = time.monotonic() + LINGER
        try:
            while waiter.next is None and waiter.conn is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter.wait(max(1, int(left * 1000)))
        finally:
            waiter.lingering = False
        following, waiter.next = waiter.next, None
        return following

    def resume(self, event: Event, value: Any, error: str | None) -> None:
        event.handle.slot.put((value, error), claim(event.reply))

    def abort(self, event: Event, waiting: bool) -> None:
        super().abort(event, waiting)
        channel = event.handle
        if channel is not None and channel.direct is not None:
            channel.direct.stop()


class ThreadWorker(IOLoopWorker):
    name: ClassVar[str] = "threads"

    def __init__(self, threads: int | None = None, cpu_affinity: str = "auto") -> None:
        super().__init__()
        self.pool = ThreadPool(threads or DEFAULT_THREADS)
        self._cpu = server_cpu(cpu_affinity)  # the one CPU this process runs on, or None
        self._executor: ThreadExecutor | None = None

    def create_executor(self, lua_style: bool) -> Executor:
        self._executor = ThreadExecutor(self.pool, lua_style)
        return self._executor

    def loop_started(self, loop: IOLoop) -> None:
        pin_process(self._cpu)  # handler threads started from here on inherit it
        if self._executor is not None:
            self._executor.loop = loop  # handler threads give connections back to it

    def loop_finished(self) -> None:
        self.pool.shutdown()
