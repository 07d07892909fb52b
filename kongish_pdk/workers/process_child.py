"""The worker process of the processes mode: plugin objects live here and handlers run here.

Each worker keeps its own Plugin object per instance (like each Kong nginx worker keeps its
own instances), created on the first event it gets for that instance, so state in ``self``
persists across the events this worker runs. The server sends an instance's config with the
first command for it that reaches this worker; the worker keeps it, builds the object once
from it, and queues the events that arrive while ``__init__`` still runs. Handlers run on a
thread pool with the same in-process executor as the threads mode; their outcomes go back to
the server over the pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kongish_pdk import log as logsetup
from kongish_pdk.plugin.source import PluginSource
from kongish_pdk.plugin.spec import PluginSpec
from kongish_pdk.protocol.names import CallCheck
from kongish_pdk.runtime.events import Event
from kongish_pdk.runtime.handler import failure
from kongish_pdk.runtime.instances import Instance, new_instance
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.runtime.outcomes import Failed, Outcome, PDKCall
from kongish_pdk.server.lifecycle import die_with_parent
from kongish_pdk.server.memory import MemoryTrimmer
from kongish_pdk.workers import process_pipe as msg
from kongish_pdk.workers.affinity import pin_process
from kongish_pdk.workers.pool import LockSlot, ThreadPool
from kongish_pdk.workers.priority import DEFAULT_WORKER_NICE, lower_priority
from kongish_pdk.workers.process_pipe import Pipe

log = logging.getLogger("kongish_pdk.workers")


@dataclass(frozen=True)
class ChildOptions:
    source: PluginSource
    threads: int
    lua_style: bool
    verbosity: int
    log_format: str
    # Raises if the gateway protocol cannot carry a PDK call, so the plugin gets the error in
    # its call here, as in the in-process modes. A module-level function: it pickles by
    # reference (spawn, forkserver), so the worker imports its module as it unpickles this.
    call_check: CallCheck | None = None
    nice: int = DEFAULT_WORKER_NICE  # nice steps below the server (workers/priority.py)


class _NoReply:
    """Events in a worker answer through the pipe, never through a Reply."""

    def result(self, value: Any) -> None:
        raise AssertionError("unused in a worker process")

    error = result

    def encode_event(self, event_id: int, outcome: Outcome) -> Any:
        raise AssertionError("unused in a worker process")

    def send(self, encoded: Any) -> bool:
        raise AssertionError("unused in a worker process")


@dataclass
class _Building:
    """An instance whose Plugin object a pool thread is creating in this worker."""

    request: int | None = None  # the CONSTRUCT to answer, if that is what started it
    starts: dict[int, str] = field(default_factory=dict)  # event id -> phase, to run once built
    destroys: list[int] = field(default_factory=list)  # DESTROY requests that came meanwhile


class WorkerProcess:
    def __init__(self, pipe: Pipe, specs: list[PluginSpec], options: ChildOptions) -> None:
        self.pipe = pipe
        self.specs = {spec.name: spec for spec in specs}
        self.pool = ThreadPool(options.threads, name="kongish-handler")
        self.executor = LocalExecutor(self.pool.submit, LockSlot, options.lua_style)
        self.executor.bind(self._deliver)
        self.call_check = options.call_check
        self.instances: dict[int, Instance] = {}
        # (plugin, config) of each instance the server counts as known here: a later START
        # carries no config, and a build that failed is retried from this one.
        self.configs: dict[int, tuple[str, dict[str, Any]]] = {}
        self.building: dict[int, _Building] = {}
        self.events: dict[int, Event] = {}
        # All of the above: the reader, builders and handlers share them.
        self._lock = threading.Lock()

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

    def _construct(self, request_id: int, instance_id: int, plugin: str,
                   config: dict[str, Any]) -> None:
        with self._lock:  # a new instance: nothing else refers to it yet
            self.configs[instance_id] = (plugin, config)
            self.building[instance_id] = _Building(request=request_id)
        self.pool.submit(self._build, instance_id)

    def _start(self, event_id: int, instance_id: int, phase: str, plugin: str,
               config: dict[str, Any] | None) -> None:
        with self._lock:
            instance = self.instances.get(instance_id)
            if instance is not None:
                self._run_locked(event_id, instance, phase)
                return
            if config is not None:
                self.configs.setdefault(instance_id, (plugin, config))
            building = self.building.get(instance_id)
            if building is not None:  # __init__ is running: the event waits for it
                building.starts[event_id] = phase
                return
            self.building[instance_id] = _Building(starts={event_id: phase})
        self.pool.submit(self._build, instance_id)

    def _build(self, instance_id: int) -> None:
        """On a pool thread (__init__ may block): create this worker's one Plugin object for
        an instance from the config it was given, then answer what waited for it."""
        instance: Instance | None = None
        error: Failed | None = None
        with self._lock:
            given = self.configs.get(instance_id)
        try:
            if given is None:  # never happens while the server tracks what it sent here
                raise LookupError(f"worker {os.getpid()} was never given the config of "
                                  f"instance #{instance_id}")
            instance = self._create(instance_id, *given)
        except Exception as exc:
            error = failure(exc)
        with self._lock:
            building = self.building.pop(instance_id)
            kept = None if building.destroys else instance
            if kept is not None:
                self.instances[instance_id] = kept
                for event_id, phase in building.starts.items():  # in the lock: see _abort
                    self._run_locked(event_id, kept, phase)
            elif building.request is not None or building.destroys:
                # A failed CONSTRUCT (the server sends its events elsewhere), or closed.
                self.configs.pop(instance_id, None)
        if building.request is not None:
            self.pipe.send([msg.DONE, building.request, None if error is None else error.error])
        if instance is not None and kept is None:
            self.executor.destroy(instance)  # closed while __init__ ran: close() it now
        for request_id in building.destroys:
            self.pipe.send([msg.DONE, request_id, None])
        if kept is None:
            failed = error or Failed("the instance was closed")
            for event_id in building.starts:
                self.pipe.send([msg.FAIL, event_id,
                                f"plugin failed to start in worker {os.getpid()}: {failed.error}",
                                failed.traceback])

    def _create(self, instance_id: int, plugin: str, config: dict[str, Any]) -> Instance:
        """This worker's Plugin object for an instance; raises what __init__ raised."""
        instance = new_instance(self.specs[plugin], instance_id, config)
        self.executor.construct(instance)
        return instance

    def _run_locked(self, event_id: int, instance: Instance, phase: str) -> None:
        """Start a handler (it runs on the pool). In the lock, so an ABORT from the reader
        finds the event either queued behind __init__ or started, never in between."""
        event = Event(event_id, instance, phase, _NoReply(), 0.0)
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
            # Still queued behind __init__: it must never start.
            queued = event is None and self._unqueue_locked(event_id)
        if event is not None:
            self.executor.abort(event, waiting)
        elif queued:
            # No handler will ever report its end, and the server counts it in flight here
            # until told (the runtime already finished it, so this answers nobody). From the
            # pool, like every other answer: the reader must never block on a full channel
            # while the server blocks sending into this worker's full one.
            self.pool.submit(self._send_quietly, [msg.RETURN, event_id])

    def _send_quietly(self, message: list[Any]) -> None:
        with contextlib.suppress(OSError):  # the server is gone: serve() ends on it
            self.pipe.send(message)

    def _unqueue_locked(self, event_id: int) -> bool:
        """Drop an event waiting for its Plugin object; False if none waits (hold the lock)."""
        for building in self.building.values():
            if building.starts.pop(event_id, None) is not None:
                return True
        return False

    def _destroy(self, request_id: int, instance_id: int) -> None:
        with self._lock:
            building = self.building.get(instance_id)
            if building is not None:  # _build closes the object once __init__ returns
                building.destroys.append(request_id)  # (and drops the config it still needs)
                return
            self.configs.pop(instance_id, None)
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
    lower_priority(options.nice)
    pipe = Pipe(conn)
    try:
        specs = options.source.load()
    except Exception:
        log.exception("worker %d cannot load plugins", os.getpid())
        raise
    WorkerProcess(pipe, specs, options).serve()
