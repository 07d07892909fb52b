"""The worker process of the processes mode: plugin objects live here and handlers run here.

Each worker keeps its own Plugin object per instance (like each Kong nginx worker keeps its
own instances), created on the first event it gets for that instance, so state in ``self``
persists across the events this worker runs. Handlers run on a thread pool with the same
in-process executor as the threads mode; their outcomes go back to the server over the pipe.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kongish_pdk import log as logsetup
from kongish_pdk.plugin.source import PluginSource
from kongish_pdk.plugin.spec import PluginSpec
from kongish_pdk.runtime.events import Event
from kongish_pdk.runtime.handler import LockSlot, failure
from kongish_pdk.runtime.instances import Instance, split_config
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.runtime.outcomes import Failed, Outcome, PDKCall
from kongish_pdk.server.lifecycle import die_with_parent
from kongish_pdk.server.memory import MemoryTrimmer
from kongish_pdk.workers import process_pipe as msg
from kongish_pdk.workers.affinity import pin_process
from kongish_pdk.workers.pool import ThreadPool
from kongish_pdk.workers.process_pipe import Pipe

log = logging.getLogger("kongish_pdk.workers")


@dataclass(frozen=True)
class ChildOptions:
    source: PluginSource
    threads: int
    lua_style: bool
    verbosity: int
    log_format: str
    # "module:function" raising if the gateway protocol cannot carry a PDK call, so the
    # plugin gets the error in its call here, as in the in-process modes.
    call_check: str | None = None


def _import(path: str) -> Callable[[str, list[Any]], None]:
    module, _, name = path.partition(":")
    check: Callable[[str, list[Any]], None] = getattr(importlib.import_module(module), name)
    return check


class _NoReply:
    """Events in a worker answer through the pipe, never through a Reply."""

    def result(self, value: Any) -> None:
        raise AssertionError("unused in a worker process")

    error = result

    def encode_event(self, event_id: int, outcome: Outcome) -> Any:
        raise AssertionError("unused in a worker process")

    def send(self, encoded: Any) -> bool:
        raise AssertionError("unused in a worker process")


class WorkerProcess:
    def __init__(self, pipe: Pipe, specs: list[PluginSpec], options: ChildOptions) -> None:
        self.pipe = pipe
        self.specs = {spec.name: spec for spec in specs}
        self.pool = ThreadPool(options.threads, name="kongish-handler")
        self.executor = LocalExecutor(self.pool.submit, LockSlot, options.lua_style)
        self.executor.bind(self._deliver)
        self.call_check = _import(options.call_check) if options.call_check else None
        self.instances: dict[int, Instance] = {}
        self.events: dict[int, Event] = {}
        self._lock = threading.Lock()  # instances and events: the reader and handlers share them

    # ------------------------------------------------------------------ outcomes

    def _deliver(self, event: Event, outcome: Outcome) -> None:
        if isinstance(outcome, PDKCall):
            if self.call_check is not None:
                self.call_check(outcome.method, outcome.args)  # raises in the plugin's call
            message = [msg.CALL, event.id, outcome.method, outcome.args, outcome.terminal]
        elif isinstance(outcome, Failed):
            message = [msg.FAIL, event.id, outcome.error, outcome.traceback]
        else:
            message = [msg.RETURN, event.id]
        data = self.pipe.encode(message)  # raises in the plugin's PDK call if not encodable
        if not isinstance(outcome, PDKCall):
            with self._lock:
                self.events.pop(event.id, None)
        self.pipe.send_bytes(data)

    # ------------------------------------------------------------------ commands

    def trim_memory_when_idle(self) -> None:
        """Housekeeping thread: the server process's tick does this for itself."""
        trimmer = MemoryTrimmer()
        while True:
            time.sleep(1.0)
            trimmer.tick(idle=not self.events)

    def serve(self) -> None:
        threading.Thread(target=self.trim_memory_when_idle, name="kongish-memory",
                         daemon=True).start()
        handlers: dict[int, Callable[..., None]] = {
            msg.CONSTRUCT: self._construct,
            msg.START: self._start,
            msg.RESUME: self._resume,
            msg.ABORT: self._abort,
            msg.DESTROY: self._destroy,
        }
        while True:
            try:
                message = self.pipe.receive()
            except (EOFError, OSError):
                return  # the server is gone
            if message[0] == msg.STOP:
                return
            handlers[message[0]](*message[1:])

    def _create(self, instance_id: int, plugin: str, config: dict[str, Any]) -> Instance:
        """Create this worker's Plugin object for an instance (on a pool thread: __init__ may
        block) and register it; raises what __init__ raised. If another thread registered
        the instance meanwhile, that one stays and is returned."""
        spec = self.specs[plugin]
        user_config, meta = split_config(config, instance_id)
        instance = Instance(instance_id, spec, config, spec.make_config(user_config), meta,
                            time.time(), time.monotonic())
        self.executor.construct(instance)
        with self._lock:
            return self.instances.setdefault(instance_id, instance)

    def _construct(self, request_id: int, instance_id: int, plugin: str,
                   config: dict[str, Any]) -> None:
        def construct() -> None:
            try:
                self._create(instance_id, plugin, config)
            except Exception as exc:
                self.pipe.send([msg.DONE, request_id, f"{type(exc).__name__}: {exc}"])
                return
            self.pipe.send([msg.DONE, request_id, None])

        self.pool.submit(construct)

    def _start(self, event_id: int, instance_id: int, phase: str, plugin: str,
               config: dict[str, Any] | None) -> None:
        with self._lock:
            instance = self.instances.get(instance_id)
        if instance is not None:
            self._run(event_id, instance, phase)
            return

        def construct_then_run() -> None:
            # The first event for this instance in this worker: create our own Plugin object.
            try:
                current = self._create(instance_id, plugin, config or {})
            except Exception as exc:
                failed = failure(exc)
                self.pipe.send([msg.FAIL, event_id,
                                f"plugin failed to start in worker {os.getpid()}: {failed.error}",
                                failed.traceback])
                return
            self._run(event_id, current, phase)

        self.pool.submit(construct_then_run)

    def _run(self, event_id: int, instance: Instance, phase: str) -> None:
        event = Event(event_id, instance, phase, _NoReply(), 0.0)
        with self._lock:
            self.events[event_id] = event
        self.executor.start(event)

    def _resume(self, event_id: int, value: Any, error: str | None) -> None:
        with self._lock:
            event = self.events.get(event_id)
        if event is not None:
            self.executor.resume(event, value, error)

    def _abort(self, event_id: int, waiting: bool) -> None:
        with self._lock:
            event = self.events.get(event_id)
        if event is not None:
            self.executor.abort(event, waiting)

    def _destroy(self, request_id: int, instance_id: int) -> None:
        with self._lock:
            instance = self.instances.pop(instance_id, None)

        def destroy() -> None:
            if instance is not None:
                self.executor.destroy(instance)
            self.pipe.send([msg.DONE, request_id, None])

        self.pool.submit(destroy)


def main(conn: socket.socket, options: ChildOptions, cpu: int | None) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    die_with_parent(signal.SIGKILL)  # no server, no reason to live
    logsetup.configure(options.verbosity, options.log_format)
    pin_process(cpu)  # before the pipe reader and handler threads exist
    pipe = Pipe(conn)
    try:
        specs = options.source.load()
    except Exception:
        log.exception("worker %d cannot load plugins", os.getpid())
        raise
    WorkerProcess(pipe, specs, options).serve()
