"""gevent mode (-g): every connection and every handler is a greenlet on one hub.

The standard library is monkey-patched in :meth:`GeventWorker.prepare`, before any plugin is
imported, so ordinary blocking code (``time.sleep``, sockets, ``requests``, most database
drivers) yields to other events instead of stalling the server. This module is only imported
in -g mode, so gevent is an optional dependency.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from typing import Any, ClassVar

import gevent
import gevent.event
import gevent.lock
from gevent import monkey

from kongish_pdk.runtime.events import Executor
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.workers.base import ServeContext, Worker

log = logging.getLogger("kongish_pdk.workers")

RECV_SIZE = 64 * 1024  # under glibc's mmap threshold: a 256 KiB recv costs an mmap + munmap each


class GeventSlot:
    """One-value hand-off between greenlets (a semaphore starting at zero)."""

    __slots__ = ("_semaphore", "_value")

    def __init__(self) -> None:
        self._semaphore = gevent.lock.Semaphore(0)
        self._value: Any = None

    def put(self, value: Any) -> None:
        self._value = value
        self._semaphore.release()

    def take(self) -> Any:
        self._semaphore.acquire()
        value, self._value = self._value, None
        return value


class GeventTransport:
    __slots__ = ("_lock", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self._lock = gevent.lock.Semaphore(1)

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
            except OSError as exc:
                log.debug("write failed, closing connection: %s", exc)
                self._shutdown()
                return False
        return True

    def close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class GeventWorker(Worker):
    name: ClassVar[str] = "gevent"

    def __init__(self) -> None:
        self._stop = gevent.event.Event()
        self._connections: set[socket.socket] = set()

    def prepare(self) -> None:
        monkey.patch_all()

    def create_executor(self, lua_style: bool) -> Executor:
        # spawn_raw: no Greenlet object, no result bookkeeping; run_handler never raises.
        return LocalExecutor(gevent.spawn_raw, GeventSlot, lua_style)

    def serve(self, ctx: ServeContext) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)
        acceptor = gevent.spawn(self._accept, ctx)
        ticker = gevent.spawn(self._tick, ctx)
        self._stop.wait()
        ctx.begin_drain()
        acceptor.kill()
        ctx.listener.close()
        while not ctx.drained():
            gevent.sleep(0.05)
        ticker.kill()
        ctx.finish()
        for sock in list(self._connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()

    def _tick(self, ctx: ServeContext) -> None:
        while True:
            gevent.sleep(ctx.tick_interval)
            try:
                ctx.tick()
            except Exception:
                log.exception("housekeeping failed")

    def _accept(self, ctx: ServeContext) -> None:
        listener = ctx.listener.sock
        while True:
            try:
                sock, _ = listener.accept()
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                log.error("accept failed: %s", exc)
                gevent.sleep(0.1)
                continue
            gevent.spawn_raw(self._serve_connection, ctx, sock)

    def _serve_connection(self, ctx: ServeContext, sock: socket.socket) -> None:
        self._connections.add(sock)
        transport = GeventTransport(sock)
        session = ctx.new_session(transport)
        try:
            while True:
                try:
                    data = sock.recv(RECV_SIZE)
                except OSError:
                    break
                if not data:
                    break
                session.data_received(data)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("unexpected error while serving a connection; closing it")
        finally:
            self._connections.discard(sock)
            transport.close()
            session.connection_lost()
            sock.close()
