"""The worker interface: how a concurrency mode runs the server (like gunicorn's workers).

A worker supplies the executor that runs plugin code and the loop that serves connections.
Everything else (runtime, protocol sessions, lifecycle policy) is shared and never asks
which worker it runs under.
"""

from __future__ import annotations

import logging
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from kongish_pdk.protocol.framing import Transport
from kongish_pdk.runtime.events import Executor
from kongish_pdk.runtime.runtime import Runtime
from kongish_pdk.server.listener import UnixListener
from kongish_pdk.server.memory import MemoryTrimmer

log = logging.getLogger("kongish_pdk.server")

DRAIN_POLL = 0.05  # seconds between checks of ctx.drained() while stopping


class Session(Protocol):
    """A protocol session on one connection (sans-IO): bytes in, writes through a Transport."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...

    @property
    def settled(self) -> bool:
        """False while the gateway still owes bytes for an exchange that is over on the
        server's side (ProtoBuf:1's acknowledgements). Closing such a connection would fail
        Kong's request, so a stopping server waits for them."""
        ...


SessionFactory = Callable[[Transport], Session]


@dataclass
class ServeContext:
    """What a worker's loop needs, and the shared shutdown policy."""

    listener: UnixListener
    new_session: SessionFactory
    runtime: Runtime
    tick_interval: float = 1.0
    drain_timeout: float = 2.0
    extra_tick: Callable[[], None] | None = None
    memory: MemoryTrimmer = field(default_factory=MemoryTrimmer)
    _drain_deadline: float | None = field(default=None, init=False)
    _sessions: weakref.WeakSet[Session] = field(default_factory=weakref.WeakSet, init=False)
    _told_unsettled: bool = field(default=False, init=False)

    def open_session(self, transport: Transport) -> Session:
        """A new connection's session (the drain looks at it until it is gone)."""
        session = self.new_session(transport)
        self._sessions.add(session)
        return session

    def tick(self) -> None:
        """Housekeeping, every ``tick_interval``; a failure is logged, never raised."""
        try:
            self.runtime.tick()
            self.memory.tick(idle=self.runtime.in_flight() == 0)
            if self.extra_tick is not None:
                self.extra_tick()
        except Exception:
            log.exception("housekeeping failed")

    def begin_drain(self) -> None:
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.drain_timeout
            log.info("stopping: no new connections; draining %d event(s) for up to %gs",
                     self.runtime.in_flight(), self.drain_timeout)

    def drained(self) -> bool:
        """True once nothing is in flight and every connection is settled, or the drain
        period is over."""
        assert self._drain_deadline is not None
        if time.monotonic() >= self._drain_deadline:
            return True
        if self.runtime.in_flight():
            return False
        unsettled = sum(1 for session in list(self._sessions) if not session.settled)
        if unsettled and not self._told_unsettled:
            self._told_unsettled = True
            log.info("stopping: every event is done; reading the gateway's last "
                     "acknowledgements on %d connection(s)", unsettled)
        return unsettled == 0

    def finish(self) -> None:
        left = self.runtime.in_flight()
        if left:
            self.runtime.abort_all("the server is shutting down")
            log.warning("stopped %d event(s) still in flight at shutdown", left)


class Worker(ABC):
    name: ClassVar[str]

    def prepare(self) -> None:
        """Runs before any plugin is imported (gevent monkey-patches here)."""
        return None

    @abstractmethod
    def create_executor(self, lua_style: bool) -> Executor:
        """The executor the runtime runs plugin code with."""

    @abstractmethod
    def serve(self, ctx: ServeContext) -> None:
        """Serve until :meth:`stop`, then drain (``ctx.drained``) and return."""

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`serve` to drain and return; safe from signal handlers and any thread."""
