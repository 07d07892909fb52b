"""gevent mode (-g): every connection and every handler is a greenlet on one hub.

The standard library is monkey-patched in :meth:`GeventWorker.prepare`, before any plugin is
imported, so ordinary blocking code (``time.sleep``, sockets, ``requests``, most database
drivers) yields to other events instead of stalling the server. This module is only imported
in -g mode, so gevent is an optional dependency.

Handlers run as coroutines of the connection greenlets: a HandleEvent starts the handler's
greenlet right away and a Step switches straight into it; control comes back when the
handler waits for its next Step or ends. No hub round trip per PDK call. The connection has
nothing else to read meanwhile, because Kong sends one request at a time per connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, ClassVar

import gevent
import gevent.event
import gevent.lock
from gevent import monkey
from greenlet import getcurrent, greenlet

from kongish_pdk.runtime.events import Event, Executor
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.server.connections import RECV_SIZE, BaseTransport
from kongish_pdk.workers.base import DRAIN_POLL, ServeContext, Worker

log = logging.getLogger("kongish_pdk.workers")

_select = monkey.get_original("select", "select")


class GreenletSlot:
    """A Step's value for a handler greenlet, delivered by switching into it."""

    __slots__ = ("_ready", "_taker", "_value")

    def __init__(self) -> None:
        self._taker: Any = None  # the handler greenlet blocked in take()
        self._ready = False
        self._value: Any = None

    def put(self, value: Any) -> None:
        taker, self._taker = self._taker, None
        if taker is None:  # not waiting yet (still sending its call): it will find the value
            self._value, self._ready = value, True
            return
        taker.parent = getcurrent()  # if the handler ends, come back here
        taker.switch(value)  # run it until it waits for its next Step, or ends

    def take(self) -> Any:
        if self._ready:
            value, self._value, self._ready = self._value, None, False
            return value
        me = getcurrent()
        self._taker = me
        # Back to the greenlet that started or last resumed this handler.
        return me.parent.switch()


class HandlerGreenlets:
    """Greenlets that run handlers one after another, instead of a new greenlet per event.

    On CPython 3.11+ every greenlet gets its own stack for Python frames, a 16 KiB chunk
    mmapped on its first call and unmapped when it dies: an mmap, a munmap and fresh pages
    to fault in per event. A finished handler's greenlet parks here, up to ``keep`` of them,
    and runs the next handler; beyond that (after a burst) it ends as before.
    """

    def __init__(self, keep: int = 128) -> None:
        self._parked: list[greenlet] = []
        self._keep = keep
        # The handler for the runner switched to next. Not a switch argument: the first one
        # would stay referenced from the greenlet's bootstrap call for as long as it lives.
        self._next: Callable[[], None] | None = None

    def run_inline(self, run: Callable[[], None]) -> None:
        """Run ``run`` in a handler greenlet now; return when it first waits or ends."""
        runner = self._parked.pop() if self._parked else greenlet(self._serve)
        runner.parent = getcurrent()  # where it returns when the handler waits or ends
        self._next = run
        runner.switch()

    def _serve(self) -> None:
        me = getcurrent()
        while True:
            run, self._next = self._next, None
            assert run is not None
            run()
            del run  # keep nothing of the finished event alive while parked
            if len(self._parked) >= self._keep:
                return
            self._parked.append(me)
            me.parent.switch()  # parked until run_inline hands it the next handler


class GeventExecutor(LocalExecutor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers = HandlerGreenlets()

    def _launch(self, event: Event, run: Callable[[], None]) -> None:
        self._handlers.run_inline(run)


class GeventTransport(BaseTransport):
    __slots__ = ()

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, gevent.lock.Semaphore(1))

    _send_now = staticmethod(os.write)

    def _send_rest(self, rest: memoryview) -> None:
        self.sock.sendall(rest)  # yields to other greenlets while the socket is full

    def pending_input(self) -> bool:
        # The connection's greenlet does not read while its handler runs inline, so look.
        readable, _, _ = _select([self.fd], [], [], 0)  # the real select: must not yield
        return bool(readable)


class GeventWorker(Worker):
    name: ClassVar[str] = "gevent"

    def __init__(self) -> None:
        self._stop = gevent.event.Event()
        self._connections: set[socket.socket] = set()

    def prepare(self) -> None:
        monkey.patch_all()

    def create_executor(self, lua_style: bool) -> Executor:
        # Blocking work (Plugin.__init__, close()) runs in greenlets of its own; spawn_raw has
        # no Greenlet object or result bookkeeping. Handlers run inline (GeventExecutor).
        # gevent's own semaphore: implemented in C, unlike the monkey-patched threading.Lock.
        return GeventExecutor(gevent.spawn_raw, GreenletSlot, lua_style,
                              lambda: gevent.lock.Semaphore(1))

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
            gevent.sleep(DRAIN_POLL)
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
            ctx.tick()

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
        session = ctx.open_session(transport)
        hub = gevent.get_hub()
        readable = hub.loop.io(transport.fd, 1)  # one watcher for the connection's life
        try:
            while True:
                # Wait first: right after answering, Kong's next request is not there yet,
                # so trying to read first would mostly cost a failed read.
                hub.wait(readable)
                try:
                    data = os.read(transport.fd, RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                session.data_received(data)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("unexpected error while serving a connection; closing it")
        finally:
            readable.close()
            self._connections.discard(sock)
            transport.close()
            session.connection_lost()
            sock.close()
