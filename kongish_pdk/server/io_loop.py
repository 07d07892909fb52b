"""The I/O loop of the threads and processes modes (epoll, one-shot).

Connections are armed with EPOLLONESHOT: when one becomes readable, epoll disarms it and this
loop is its only reader until it is armed again, either by the loop itself after dispatching
or by the thread that took the connection over when it gives it back (:meth:`IOLoop.arm`,
callable from any thread). Plugin code never runs here.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable

from kongish_pdk.server import nogil
from kongish_pdk.server.connections import (
    RECV_SIZE,
    Connection,
    SocketTransport,
    dispatch,
)
from kongish_pdk.workers.base import DRAIN_POLL, ServeContext

log = logging.getLogger("kongish_pdk.server")

_ONESHOT_READ = select.EPOLLIN | select.EPOLLONESHOT


class IOLoop:
    def __init__(self, ctx: ServeContext) -> None:
        self.ctx = ctx
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._connections: dict[int, Connection] = {}
        self._watched: dict[int, Callable[[], None]] = {}  # other descriptors, e.g. -m workers
        self._close_lock = threading.Lock()
        self._receiver = nogil.Receiver(RECV_SIZE)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # already woken, or shutting down
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------ any thread

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` on the loop's thread whenever ``fd`` has data (level-triggered).

        ``on_readable`` should handle its own errors: one it lets out is logged and ends the
        watch, since calling it again would most likely fail again.
        """
        self._watched[fd] = on_readable
        self._epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def arm(self, conn: Connection) -> None:
        """Let the loop read ``conn`` again (its current reader gives it back)."""
        if conn.closed:
            return
        try:
            self._epoll.modify(conn.fd, _ONESHOT_READ)
        except OSError:  # closed meanwhile
            self.close(conn)

    def close(self, conn: Connection) -> None:
        """Forget a connection (its reader saw end-of-file, or the server stops)."""
        with self._close_lock:
            if conn.closed:
                return
            conn.closed = True
            self._connections.pop(conn.fd, None)
            with contextlib.suppress(OSError):
                self._epoll.unregister(conn.fd)
        conn.transport.close()
        conn.session.connection_lost()
        conn.sock.close()  # only now may the descriptor number be reused

    # ------------------------------------------------------------------ the loop's thread

    def run(self) -> None:
        ctx = self.ctx
        listener = ctx.listener.sock
        listener.setblocking(False)
        self._epoll.register(listener.fileno(), select.EPOLLIN)
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        listen_fd, wake_fd = listener.fileno(), self._wake_r.fileno()
        next_tick = time.monotonic() + ctx.tick_interval
        draining = False
        try:
            while True:
                timeout = DRAIN_POLL if draining else max(0.0, next_tick - time.monotonic())
                for fd, _ in self._epoll.poll(timeout):
                    if fd == listen_fd:
                        self._accept(listener)
                    elif fd == wake_fd:
                        self._drain_wakeups()
                    elif (conn := self._connections.get(fd)) is not None:
                        self._read(conn)
                    elif (on_readable := self._watched.get(fd)) is not None:
                        self._call_watcher(fd, on_readable)
                now = time.monotonic()
                if now >= next_tick:
                    ctx.tick()
                    next_tick = now + ctx.tick_interval
                if self._stopping and not draining:
                    draining = True
                    self._epoll.unregister(listen_fd)
                    ctx.listener.close()
                    ctx.begin_drain()
                if draining and ctx.drained():
                    break
        finally:
            ctx.finish()
            for conn in list(self._connections.values()):
                self.close(conn)
            self._epoll.close()
            self._wake_r.close()
            self._wake_w.close()

    def _call_watcher(self, fd: int, on_readable: Callable[[], None]) -> None:
        try:
            on_readable()
        except Exception:  # a bug must cost that one descriptor, never the server
            log.exception("unexpected error reading descriptor %d; no longer watching it", fd)
            self.unwatch(fd)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                log.error("accept failed: %s", exc)
                return
            sock.setblocking(False)
            transport = SocketTransport(sock)
            conn = Connection(sock, transport, self.ctx.open_session(transport))
            self._connections[conn.fd] = conn
            self._epoll.register(conn.fd, _ONESHOT_READ)

    def _read(self, conn: Connection) -> None:
        data = self._receiver.recv(conn.fd)
        if data is None:
            self.arm(conn)
        elif not data:
            self.close(conn)
        else:
            claimed = dispatch(conn, data)
            if conn.transport.closed:
                self.close(conn)
            elif not claimed:
                self.arm(conn)
