"""Gateway connections in the threads and processes modes, and who reads each one.

Exactly one thread reads a connection at any time: the I/O loop while the connection is armed
in epoll, or the thread that took it over. While a request is dispatched, its connection is
the current thread's *reader context*; an executor may :func:`claim` it for the thread that
will answer the request (the handler's thread), which then keeps reading it. Kong returns a
connection to its pool and takes the same one straight back for the event's next call, so
the next Step usually arrives where the handler already listens: no hand-off between threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from kongish_pdk.server import nogil
from kongish_pdk.workers.base import Session

log = logging.getLogger("kongish_pdk.server")

# CPython allocates the requested size for every socket.recv()/os.read() and shrinks it
# afterwards (gevent's reads, a worker's channel); above malloc's mmap threshold (128 KiB)
# that costs an mmap/munmap pair per call, about 10x the syscall itself. nogil.Receiver
# reuses one buffer of this size. Large frames just take several reads.
RECV_SIZE = 64 * 1024
WRITE_TIMEOUT = 60.0  # Kong gives up after 60 s too


class BaseTransport:
    """Serialised writes to one non-blocking connection; the subclasses say how to send.

    A write first tries one plain send, which almost always takes all of it; only the rest,
    if any, goes through the worker's way of waiting for the socket to drain.
    """

    __slots__ = ("_lock", "closed", "fd", "sock")

    def __init__(self, sock: socket.socket, lock: AbstractContextManager[Any]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.closed = False
        self._lock = lock

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self.closed:
                return False
            try:
                try:
                    sent = self._send_now(self.fd, data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self._send_rest(memoryview(data)[sent:])
            except OSError as exc:
                log.debug("write failed, closing connection: %s", exc)
                self._shutdown()
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        # Whoever reads the socket sees end-of-file and cleans up; closing the descriptor here
        # could let it be reused by a new connection while still registered.
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # (fd, data) -> bytes sent, or BlockingIOError: a plain function (staticmethod), so a
    # write costs no Python call of its own before the system call.
    _send_now: Callable[[int, bytes], int]

    def _send_rest(self, rest: memoryview) -> None:
        raise NotImplementedError


class SocketTransport(BaseTransport):
    """A connection of the threads and processes modes."""

    __slots__ = ()

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, threading.Lock())

    _send_now = staticmethod(nogil.send)

    def _send_rest(self, rest: memoryview) -> None:
        _send_all(self.sock, rest)

    def pending_input(self) -> bool:
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False


def _send_all(sock: socket.socket, data: bytes | memoryview) -> None:
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


class Connection:
    __slots__ = ("closed", "fd", "session", "sock", "transport")

    def __init__(self, sock: socket.socket, transport: SocketTransport, session: Session) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.transport = transport
        self.session = session
        self.closed = False


class _Dispatch:
    """One thread's dispatch of one connection's bytes (its reader context)."""

    __slots__ = ("claimed", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.claimed = False


_reading = threading.local()


def dispatch(conn: Connection, data: bytes) -> bool:
    """Hand bytes to the connection's session, with the connection as reader context.

    True if a request in them claimed the connection: its new reader may already be reading
    it, so the caller must not (nor give it back to the I/O loop). The answer belongs to this
    dispatch alone; a flag on the connection could already have been reset by the new
    reader's own dispatches when the caller looks.
    """
    previous = getattr(_reading, "current", None)
    current = _reading.current = _Dispatch(conn)
    try:
        conn.session.data_received(data)
    except Exception:  # a bug must cost one connection, never the server
        log.exception("unexpected error while serving a connection; closing it")
        conn.transport.close()
    finally:
        _reading.current = previous
    return current.claimed


def claim(reply: object) -> Connection | None:
    """Take over reading the connection the request being dispatched came from.

    ``reply`` is the request's Reply; it is only claimed if it answers on the connection the
    current thread is dispatching (the codecs' replies say which in ``transport``; the
    runtime's Reply protocol does not need it), and only once per dispatch.
    """
    current: _Dispatch | None = getattr(_reading, "current", None)
    if current is None or current.claimed:
        return None
    conn = current.conn
    if getattr(reply, "transport", None) is not conn.transport:
        return None
    current.claimed = True
    return conn
