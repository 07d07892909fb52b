"""One I/O thread for all connections: a selector loop (threads and processes modes).

Reading, decoding and routing happen here; plugin code never does. Replies are written by
whichever thread produced them (usually the handler's own thread), so a PDK round trip costs
one hand-off between threads, not two.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import selectors
import socket
import threading
import time

from kongish_pdk.workers.base import ServeContext, Session

log = logging.getLogger("kongish_pdk.server")

RECV_SIZE = 256 * 1024
WRITE_TIMEOUT = 60.0  # Kong gives up after 60 s too


class SocketTransport:
    """Thread-safe writes to one non-blocking connection."""

    __slots__ = ("_lock", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self.closed:
                return False
            try:
                _send_all(self.sock, data)
            except OSError as exc:
                log.debug("write failed, closing connection: %s", exc)
                self._shutdown()
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        # The I/O thread sees end-of-file and unregisters the socket itself: closing it here
        # could let the selector confuse it with a new connection reusing the fd number.
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    poller: select.poll | None = None
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            if not poller.poll(WRITE_TIMEOUT * 1000):
                raise OSError(errno.ETIMEDOUT, "gateway stopped reading") from None
            continue
        view = view[sent:]


class _Connection:
    __slots__ = ("session", "sock", "transport")

    def __init__(self, sock: socket.socket, transport: SocketTransport, session: Session) -> None:
        self.sock = sock
        self.transport = transport
        self.session = session


class SelectorLoop:
    def __init__(self, ctx: ServeContext) -> None:
        self.ctx = ctx
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._connections: dict[int, _Connection] = {}

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # already woken, or shutting down
            self._wake_w.send(b"\0")

    def run(self) -> None:
        ctx = self.ctx
        listener = ctx.listener.sock
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        next_tick = time.monotonic() + ctx.tick_interval
        draining = False
        try:
            while True:
                timeout = 0.05 if draining else max(0.0, next_tick - time.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is listener:
                        self._accept(listener)
                    elif key.fileobj is self._wake_r:
                        self._drain_wakeups()
                    else:
                        self._readable(key.data)
                now = time.monotonic()
                if now >= next_tick:
                    ctx.tick()
                    next_tick = now + ctx.tick_interval
                if self._stopping and not draining:
                    draining = True
                    self._selector.unregister(listener)
                    ctx.listener.close()
                    ctx.begin_drain()
                if draining and ctx.drained():
                    break
        finally:
            ctx.finish()
            for conn in list(self._connections.values()):
                self._close(conn)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
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
            conn = _Connection(sock, transport, self.ctx.new_session(transport))
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        try:
            conn.session.data_received(data)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("unexpected error while serving a connection; closing it")
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._connections.pop(fd, None) is not None:
            self._selector.unregister(conn.sock)
        conn.transport.close()
        conn.session.connection_lost()
        conn.sock.close()
