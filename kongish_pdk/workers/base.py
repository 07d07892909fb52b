"""The worker interface: how a concurrency mode runs the server (like gunicorn's workers).

A worker supplies the executor that runs plugin code and the loop that serves connections.
Everything else (runtime, protocol sessions, lifecycle policy) is shared and never asks
which worker it runs under.
"""

from __future__ import annotations

import logging
import time
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
        """True once nothing is in flight or the drain period is over."""
        assert self._drain_deadline is not None
        return self.runtime.in_flight() == 0 or time.monotonic() >= self._drain_deadline

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
