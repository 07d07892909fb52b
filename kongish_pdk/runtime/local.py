"""The in-process executor: plugin objects live here, handlers run on a spawn function.

Threads and gevent modes differ only in the ``spawn`` function and the ``Slot`` type they give
it; the processes mode runs one of these inside every worker process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from kongish_pdk.runtime.events import Deliver, Event
from kongish_pdk.runtime.handler import EventChannel, Slot, run_handler
from kongish_pdk.runtime.instances import Instance
from kongish_pdk.runtime.outcomes import Outcome

log = logging.getLogger("kongish_pdk.runtime")

Spawn = Callable[..., None]


def construct_plugin(instance: Instance) -> Any:
    """``Plugin(config)``, or ``Plugin(config, meta=...)`` for plugins that ask for it."""
    spec = instance.spec
    if spec.accepts_meta:
        return spec.cls(instance.plugin_config, meta=instance.meta)
    return spec.cls(instance.plugin_config)


def close_plugin(name: str, instance_id: int, plugin: Any) -> None:
    close = getattr(plugin, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception as exc:
        log.error("plugin %r instance #%d: close() raised %s: %s", name, instance_id,
                  type(exc).__name__, exc, exc_info=exc)


class LocalExecutor:
    def __init__(self, spawn: Spawn, slot_factory: Callable[[], Slot], lua_style: bool,
                 lock_factory: Callable[[], AbstractContextManager[Any]] = threading.Lock,
                 ) -> None:
        self._spawn = spawn
        self._slot_factory = slot_factory
        self._lua_style = lua_style
        self._lock_factory = lock_factory
        self._deliver: Deliver | None = None

    def new_lock(self) -> AbstractContextManager[Any]:
        return self._lock_factory()

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def run_blocking(self, fn: Callable[[], None]) -> None:
        self._spawn(fn)

    def construct(self, instance: Instance) -> None:
        instance.plugin = construct_plugin(instance)

    def destroy(self, instance: Instance) -> None:
        close_plugin(instance.spec.name, instance.id, instance.plugin)

    def start(self, event: Event) -> None:
        deliver = self._deliver
        assert deliver is not None, "bind() the executor to a runtime first"

        def emit(outcome: Outcome) -> None:
            deliver(event, outcome)

        channel = EventChannel(emit, self._slot_factory())
        event.handle = channel
        method = getattr(event.instance.plugin, event.phase)
        self._launch(event, partial(run_handler, method, channel, emit, self._lua_style))

    def _launch(self, event: Event, run: Callable[[], None]) -> None:
        """Run a handler; a worker may override it to run the handler somewhere special."""
        self._spawn(run)

    def resume(self, event: Event, value: Any, error: str | None) -> None:
        event.handle.slot.put((value, error))

    def abort(self, event: Event, waiting: bool) -> None:
        channel = event.handle
        if channel is not None:
            channel.stop("the event was stopped by the server (orphaned, overdue or shutdown)",
                         waiting)
