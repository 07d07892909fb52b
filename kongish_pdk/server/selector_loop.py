"""One I/O thread for all connections: an epoll loop (threads and processes modes).

Reading, decoding and routing happen here; plugin code never does. Replies are written by
whichever thread produced them (usually the handler's own thread), so a PDK round trip costs
one hand-off between threads, not two.

With a thread pool (threads mode) a session may also *borrow* its connection: the loop stops
watching it, the thread running the event reads it directly (``SocketTransport.recv``), and
``give_back`` puts it back in the epoll set from that thread (epoll_ctl is thread-safe, so no
wake-up of the I/O thread is needed). ProtoBuf:1 does this for a whole event, which runs on
one connection in lockstep, so its PDK round trips need no hand-off at all.

``give_back(linger=True)`` goes one step further: once the handler has returned, its pool
thread waits briefly (``LINGER``) for Kong's next call on the same connection, which a busy
Kong sends at once, and runs it itself (``ThreadPool.capturing``): a busy connection then
costs neither the I/O thread nor a hand-off to another pool thread per event. Without a call
in that time, or with too many threads lingering already, the loop watches it again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import threading
import time

from kongish_pdk.workers.base import ServeContext, Session
from kongish_pdk.workers.pool import ThreadPool

log = logging.getLogger("kongish_pdk.server")

LINGER = 0.002  # seconds a pool thread waits for the next call on the connection it used
MAX_LINGERING = 16  # pool threads lingering at once, at most
RECV_SIZE = 64 * 1024  # under glibc's mmap threshold: a 256 KiB recv costs an mmap + munmap each
WRITE_TIMEOUT = 60.0  # Kong gives up after 60 s too


WATCHED, LENT, LINGERING, RELEASED = range(4)


class SocketTransport:
    """Thread-safe writes to one non-blocking connection; lending when the loop allows it."""

    __slots__ = ("_lent_timeout", "_lock", "_loop", "_poller", "closed", "sock", "state")

    def __init__(self, sock: socket.socket, loop: SelectorLoop | None = None) -> None:
        self.sock = sock
        self.closed = False  # shut down: no more writes (the loop still sees end of file)
        # WATCHED (the loop reads it), LENT (a borrower does), LINGERING (the borrower's pool
        # thread waits for the next call), RELEASED (closed by the loop: never touch the fd,
        # its number may belong to another connection now). Guarded by _lock.
        self.state = WATCHED
        self._lock = threading.Lock()
        self._loop = loop  # set when connections may be lent
        self._lent_timeout = 0.0
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
        """Stop the loop reading this connection (call inside ``data_received``); the
        borrower reads with :meth:`recv` until :meth:`give_back`."""
        return self._loop is not None and self.take()

    def recv(self, timeout: float) -> bytes:
        """The borrower's blocking read: ``b""`` on end of file, error or timeout."""
        # While lent the socket blocks, with a kernel timeout (SO_RCVTIMEO): one syscall and
        # one release of the GIL per read, instead of poll() then recv().
        if self._lent_timeout != timeout:
            self._lent_timeout = timeout
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
        try:
            return self.sock.recv(RECV_SIZE)
        except BlockingIOError:  # SO_RCVTIMEO expired
            log.debug("no data from the gateway for %gs", timeout)
            return b""
        except OSError:
            return b""

    def give_back(self, linger: bool = False) -> None:
        """End a loan (from any thread). ``linger``: the event ended normally, so let this
        pool thread wait briefly for Kong's next call before the loop watches it again."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            if self.state != LENT:
                return
            if linger and loop.linger_later(self):
                self.state = LINGERING
                return
            self._watch_locked()

    def take(self) -> bool:
        """Start a loan (I/O thread, or the lingering thread): False if the loop reads it."""
        assert self._loop is not None
        with self._lock:
            if self.state == LINGERING:
                self.state = LENT
                return True
            if self.state != WATCHED:
                return False
            self._loop.unwatch(self.sock)
            self.sock.setblocking(True)  # the borrower's recv() blocks (SO_RCVTIMEO bounds it)
            self.state = LENT
            return True

    def read_ready(self) -> bytes:
        """Read what ``wait_readable`` found (``b""``: end of file or an error)."""
        try:
            return self.sock.recv(RECV_SIZE)
        except OSError:
            return b""

    def wait_readable(self, timeout: float) -> bool:
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        return bool(self._poller.poll(timeout * 1000))

    def end_linger(self) -> None:
        """The lingering thread is done: unless the connection was lent again, watch it."""
        with self._lock:
            if self.state == LINGERING:
                self._watch_locked()

    def _watch_locked(self) -> None:
        assert self._loop is not None
        self.sock.setblocking(False)
        self.state = WATCHED
        self._loop.watch(self.sock)

    def release(self) -> None:
        """The loop is about to close the socket (I/O thread)."""
        with self._lock:
            self.state = RELEASED
            self.closed = True

    def _shutdown(self) -> None:
        # The I/O thread sees end-of-file and unregisters the socket itself: closing it here
        # could let the selector confuse it with a new connection reusing the fd number.
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


_SEND_TIMEVAL = _timeval(WRITE_TIMEOUT)  # SO_SNDTIMEO: only a blocking (lent) socket uses it


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
    __slots__ = ("fd", "session", "sock", "transport")

    def __init__(self, sock: socket.socket, transport: SocketTransport, session: Session) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.transport = transport
        self.session = session


_LISTENER = object()
_WAKE = object()


class SelectorLoop:
    def __init__(self, ctx: ServeContext, pool: ThreadPool | None = None) -> None:
        """``pool``: the handlers' thread pool, when they may block on a socket (threads
        mode); connections are lent to them only then."""
        self.ctx = ctx
        self._pool = pool
        self._lingering = 0
        self._linger_lock = threading.Lock()
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        # fd -> connection (or a marker); lent connections stay here, out of the epoll set
        self._targets: dict[int, object] = {}

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # already woken (buffer full), or shutting down
            self._wake_w.send(b"\0")

    def run(self) -> None:
        ctx = self.ctx
        listener = ctx.listener.sock
        listener.setblocking(False)
        self._add(listener.fileno(), _LISTENER)
        self._add(self._wake_r.fileno(), _WAKE)
        next_tick = time.monotonic() + ctx.tick_interval
        draining = False
        try:
            while True:
                timeout = 0.05 if draining else max(0.0, next_tick - time.monotonic())
                try:
                    ready = self._epoll.poll(timeout, 256)
                except InterruptedError:
                    ready = []
                for fd, _ in ready:
                    target = self._targets.get(fd)
                    if target is _LISTENER:
                        self._accept(listener)
                    elif target is _WAKE:
                        self._drain_wakeups()
                    elif isinstance(target, _Connection):
                        self._readable(target)
                now = time.monotonic()
                if now >= next_tick:
                    ctx.tick()
                    next_tick = now + ctx.tick_interval
                if self._stopping and not draining:
                    draining = True
                    self._remove(listener.fileno())
                    ctx.listener.close()
                    ctx.begin_drain()
                if draining and ctx.drained():
                    break
        finally:
            ctx.finish()
            for conn in [t for t in self._targets.values() if isinstance(t, _Connection)]:
                self._close(conn)
            self._epoll.close()
            self._wake_r.close()
            self._wake_w.close()

    def _add(self, fd: int, target: object) -> None:
        self._targets[fd] = target
        self._epoll.register(fd, select.EPOLLIN)

    def _remove(self, fd: int) -> None:
        self._targets.pop(fd, None)
        with contextlib.suppress(OSError):  # lent: not in the epoll set
            self._epoll.unregister(fd)

    def unwatch(self, sock: socket.socket) -> None:
        """Stop watching a connection (its transport holds its lock): it is being lent."""
        self._epoll.unregister(sock)

    def watch(self, sock: socket.socket) -> None:
        """From any thread (the transport holds its lock): watch a lent connection again."""
        self._epoll.register(sock, select.EPOLLIN)

    def linger_later(self, transport: SocketTransport) -> bool:
        """Have this pool thread, once its handler returned, wait for the next call."""
        pool = self._pool
        if pool is None:
            return False
        with self._linger_lock:
            if self._lingering >= MAX_LINGERING:
                return False
            self._lingering += 1
        if pool.defer(self._linger, transport):
            return True
        with self._linger_lock:
            self._lingering -= 1
        return False

    def _linger(self, transport: SocketTransport) -> None:
        """A pool thread, its handler done: the next call on the connection, if it comes
        within LINGER, is served here (and its handler runs next on this very thread)."""
        assert self._pool is not None
        try:
            conn = self._targets.get(transport.sock.fileno())
            if isinstance(conn, _Connection) and transport.wait_readable(LINGER):
                data = transport.read_ready()
                if data:
                    with self._pool.capturing():
                        conn.session.data_received(data)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("unexpected error while serving a connection; closing it")
            transport.close()
        finally:
            with self._linger_lock:
                self._lingering -= 1
            transport.end_linger()

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
            if self._pool is not None:  # a lent socket blocks: bound its writes too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SEND_TIMEVAL)
            transport = SocketTransport(sock, self if self._pool is not None else None)
            conn = _Connection(sock, transport, self.ctx.new_session(transport))
            self._add(conn.fd, conn)

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
        if self._targets.get(conn.fd) is conn:
            self._remove(conn.fd)
        conn.transport.release()  # before close(): no give_back may touch the fd after it
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.session.connection_lost()
        conn.sock.close()
