"""One I/O thread for all connections: a selector loop (threads and processes modes).

Reading, decoding and routing happen here; plugin code never does. Replies are written by
whichever thread produced them (usually the handler's own thread), so a PDK round trip costs
one hand-off between threads, not two.

With ``lend=True`` (threads mode) a session may also *borrow* its connection: the loop stops
reading it, the thread running the event reads it directly (``SocketTransport.recv``), and
``give_back`` returns it to the loop. ProtoBuf:1 does this for a whole event, which runs on
one connection in lockstep, so its PDK round trips need no hand-off at all.
"""

from __future__ import annotations

import collections
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
    """Thread-safe writes to one non-blocking connection; lending when the loop allows it."""

    __slots__ = ("_lock", "_loop", "_poller", "closed", "sock")

    def __init__(self, sock: socket.socket, loop: SelectorLoop | None = None) -> None:
        self.sock = sock
        self.closed = False
        self._lock = threading.Lock()
        self._loop = loop  # set when connections may be lent
        self._poller: select.poll | None = None

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

    def lend(self) -> bool:
        """Stop the loop reading this connection (call on the I/O thread, inside
        ``data_received``); the borrower reads with :meth:`recv` until :meth:`give_back`."""
        return self._loop is not None and self._loop.lend(self.sock)

    def recv(self, timeout: float) -> bytes:
        """The borrower's blocking read: ``b""`` on end of file, error or timeout."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self._poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    log.debug("no data from the gateway for %gs", timeout)
                    return b""
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:  # a spurious wake-up
                continue
            except OSError:
                return b""

    def give_back(self) -> None:
        """Let the loop read the connection again (from any thread)."""
        if self._loop is not None:
            self._loop.give_back(self.sock)

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
    __slots__ = ("lent", "session", "sock", "transport")

    def __init__(self, sock: socket.socket, transport: SocketTransport, session: Session) -> None:
        self.sock = sock
        self.transport = transport
        self.session = session
        self.lent = False  # a handler thread reads it; not registered with the selector


class SelectorLoop:
    def __init__(self, ctx: ServeContext, lend: bool = False) -> None:
        self.ctx = ctx
        self._lend = lend
        self._returned: collections.deque[socket.socket] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._connections: dict[int, _Connection] = {}

    def stop(self) -> None:
        self._stopping = True
        self._wake()

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
                        self._take_back()
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

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already woken (buffer full), or shutting down
            self._wake_w.send(b"\0")

    def lend(self, sock: socket.socket) -> bool:
        """On the I/O thread: stop watching a connection whose session reads it itself."""
        conn = self._connections.get(sock.fileno()) if self._lend else None
        if conn is None or conn.lent or conn.sock is not sock:
            return False
        self._selector.unregister(sock)
        conn.lent = True
        return True

    def give_back(self, sock: socket.socket) -> None:
        """From any thread: watch a lent connection again (on the I/O thread, soon)."""
        self._returned.append(sock)
        self._wake()

    def _take_back(self) -> None:
        while self._returned:
            sock = self._returned.popleft()
            conn = self._connections.get(sock.fileno())
            if conn is not None and conn.sock is sock and conn.lent:
                conn.lent = False
                self._selector.register(sock, selectors.EVENT_READ, conn)

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
            transport = SocketTransport(sock, self if self._lend else None)
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
        if fd >= 0 and self._connections.pop(fd, None) is not None and not conn.lent:
            self._selector.unregister(conn.sock)
        conn.transport.close()
        conn.session.connection_lost()
        conn.sock.close()
