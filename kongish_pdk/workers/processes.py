"""processes mode (-m): handlers run in worker processes, for plugins that need several cores.

The server process keeps the socket, the protocol and the runtime (one I/O thread, as in the
threads mode); ``ProcessExecutor`` sends each event to the least busy worker and routes its
Steps there, wherever they arrived. Plugin state is per worker (see ``process_child``).
A worker that dies is replaced, and its events are finished with an error at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kongish_pdk.plugin.source import PluginSource
from kongish_pdk.runtime.events import Deliver, Event, Executor
from kongish_pdk.runtime.handler import LockSlot
from kongish_pdk.runtime.instances import Instance
from kongish_pdk.runtime.outcomes import RETURNED, Failed, PDKCall
from kongish_pdk.server.io_loop import IOLoop
from kongish_pdk.workers import process_child
from kongish_pdk.workers import process_pipe as msg
from kongish_pdk.workers.affinity import usable_cpus, worker_cpus
from kongish_pdk.workers.loop_worker import IOLoopWorker
from kongish_pdk.workers.pool import ThreadPool
from kongish_pdk.workers.process_pipe import Pipe
from kongish_pdk.workers.threads import DEFAULT_THREADS

log = logging.getLogger("kongish_pdk.workers")

START_METHODS = ("forkserver", "spawn", "fork")


def _known(instance: Instance) -> set[int]:
    """The workers (by index) that were given this instance's config, so they have created
    its Plugin object or will on the event they were sent."""
    known: set[int] = instance.executor_state.setdefault("known", set())
    return known


@dataclass(eq=False)
class _Child:
    index: int
    process: Any  # multiprocessing.Process
    pipe: Pipe
    events: dict[int, Event] = field(default_factory=dict)  # in flight here
    alive: bool = True


class ProcessExecutor:
    def __init__(self, options: process_child.ChildOptions, start_method: str,
                 cpus: list[int | None]) -> None:
        self._options = options
        self._context = multiprocessing.get_context(start_method)
        self._cpus = cpus  # one per worker; a replacement keeps its predecessor's CPU
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._deliver: Deliver | None = None
        self._requests = itertools.count(1)
        self._turn = itertools.count()  # rotates the choice among equally busy workers
        self._pending: dict[int, tuple[LockSlot, _Child]] = {}  # CONSTRUCT awaiting an answer
        self._blocking = ThreadPool(16, name="kongish-blocking")
        self._loop: IOLoop | None = None
        self._stopping = False

    # ------------------------------------------------------------------ worker processes

    def start_workers(self) -> None:
        for index in range(len(self._cpus)):
            self._children.append(self._spawn(index))
        log.info("started %d worker processes (%s)", len(self._cpus), ", ".join(
            f"{c.process.pid}" + ("" if cpu is None else f" on CPU {cpu}")
            for c, cpu in zip(self._children, self._cpus, strict=True)))

    def _spawn(self, index: int) -> _Child:
        ours, theirs = socket.socketpair()
        process = self._context.Process(  # type: ignore[attr-defined]
            target=process_child.main, args=(theirs, self._options, self._cpus[index]),
            name=f"kongish-worker-{index}", daemon=True)
        process.start()
        theirs.close()
        child = _Child(index, process, Pipe(ours))
        if self._loop is not None:
            self._watch(child)
        return child

    def attach(self, loop: IOLoop) -> None:
        """Read the workers' channels on the I/O loop's thread: a worker's PDK call then goes
        to Kong from the same thread that reads Kong's Steps, with no hand-off."""
        self._loop = loop
        for child in self._children:
            self._watch(child)

    def _watch(self, child: _Child) -> None:
        assert self._loop is not None
        self._loop.watch(child.pipe.fd, lambda: self._readable(child))

    def stop_workers(self, timeout: float = 2.0) -> None:
        self._stopping = True
        for child in self._children:
            with contextlib.suppress(OSError):
                child.pipe.send([msg.STOP])
        for child in self._children:
            child.process.join(timeout)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout)
            child.pipe.close()

    def _readable(self, child: _Child) -> None:
        """On the I/O loop's thread: outcomes and answers coming back from a worker."""
        try:
            messages = child.pipe.available()
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.unwatch(child.pipe.fd)
            child.pipe.close()
            self._child_died(child)
            return
        for message in messages:
            self._handle(child, message)

    def _handle(self, child: _Child, message: list[Any]) -> None:
        kind = message[0]
        if kind == msg.DONE:
            waiter = self._pending.pop(message[1], None)
            if waiter is not None:
                waiter[0].put(message[2])
            return
        event = child.events.get(message[1])
        if event is None:
            return
        if kind == msg.CALL:
            outcome: PDKCall | Failed | Any = PDKCall(message[2], message[3], message[4])
        elif kind == msg.FAIL:
            outcome = Failed(message[2], message[3])
        else:
            outcome = RETURNED
        if kind != msg.CALL:  # the handler is gone from that worker
            with self._lock:
                child.events.pop(event.id, None)
        self._deliver_safely(event, outcome)

    def _deliver_safely(self, event: Event, outcome: Any) -> None:
        assert self._deliver is not None
        try:
            self._deliver(event, outcome)
        except (TypeError, ValueError, OverflowError) as exc:  # the protocol cannot carry it
            log.error("%s: cannot answer the gateway: %s", event.describe(), exc)
            if isinstance(outcome, PDKCall) and not outcome.terminal:
                # The worker checked what its pipe can carry, not what the gateway protocol
                # can (ProtoBuf:1 has no RPC for some PDK functions): the handler waits for
                # this call, so make the call raise there, as it would in-process.
                self.resume(event, None, f"{type(exc).__name__}: {exc}")

    def _child_died(self, child: _Child) -> None:
        child.alive = False
        child.process.join(1.0)
        code = child.process.exitcode
        with self._lock:
            orphans = list(child.events.values())
            child.events.clear()
            dead = [request for request, (_, owner) in self._pending.items() if owner is child]
            waiting = [self._pending.pop(request)[0] for request in dead]
        for slot in waiting:
            slot.put(f"worker process {child.process.pid} exited ({code})")
        if self._stopping:
            return
        log.error("worker process %d exited (%s) with %d event(s) in flight; replacing it",
                  child.process.pid, code, len(orphans))
        replacement = self._spawn(child.index)  # first, so no new event waits on a dead one
        with self._lock:
            self._children[child.index] = replacement
        for event in orphans:
            self._deliver_safely(event, Failed(
                f"the worker process running it died (exit code {code})"))

    # ------------------------------------------------------------------ Executor interface

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def new_lock(self) -> AbstractContextManager[Any]:
        return threading.Lock()

    def run_blocking(self, fn: Callable[[], None]) -> None:
        self._blocking.submit(fn)

    def _request(self, child: _Child, kind: int, *args: Any) -> str | None:
        """Send a command that the worker acknowledges; wait for its answer (or its death)."""
        slot = LockSlot()
        request = next(self._requests)
        with self._lock:
            self._pending[request] = (slot, child)
        try:
            child.pipe.send([kind, request, *args])
        except OSError:
            with self._lock:
                self._pending.pop(request, None)
            return f"worker process {child.process.pid} is gone"
        answer: str | None = slot.take()
        return answer

    def construct(self, instance: Instance) -> None:
        """Create the plugin in one worker now, so a failing __init__ fails StartInstance."""
        child = self._least_busy()
        error = self._request(child, msg.CONSTRUCT, instance.id, instance.spec.name,
                              instance.config)
        if error is not None:
            raise RuntimeError(error)
        _known(instance).add(child.index)

    def destroy(self, instance: Instance) -> None:
        """Close the plugin in every worker that created it; returns when all have."""
        for index in sorted(_known(instance)):
            child = self._children[index]
            if child.alive:
                self._request(child, msg.DESTROY, instance.id)

    def start(self, event: Event) -> None:
        instance = event.instance
        child = self._least_busy()
        known = _known(instance)
        config = None if child.index in known else instance.config
        known.add(child.index)
        with self._lock:
            child.events[event.id] = event
        event.handle = child
        child.pipe.send([msg.START, event.id, instance.id, event.phase, instance.spec.name,
                         config])

    def resume(self, event: Event, value: Any, error: str | None) -> None:
        self._send(event, [msg.RESUME, event.id, value, error])

    def abort(self, event: Event, waiting: bool) -> None:
        self._send(event, [msg.ABORT, event.id, waiting])

    def _send(self, event: Event, message: list[Any]) -> None:
        child: _Child = event.handle
        with contextlib.suppress(OSError):  # the worker died: _child_died finishes its events
            child.pipe.send(message)

    def _least_busy(self) -> _Child:
        """The worker with the fewest events in flight; ties take turns, so even a stream of
        one-at-a-time events for one instance uses every worker."""
        with self._lock:
            live = [c for c in self._children if c.alive] or self._children
            first = next(self._turn) % len(live)
            rotated = live[first:] + live[:first]
            return min(rotated, key=lambda c: len(c.events))


class ProcessWorker(IOLoopWorker):
    name: ClassVar[str] = "processes"

    def __init__(self, source: PluginSource, *, workers: int | None = None,
                 threads: int | None = None, start_method: str = "forkserver",
                 cpu_affinity: str = "auto",
                 verbosity: int = 0, log_format: str = "text",
                 call_check: str | None = None) -> None:
        super().__init__()
        self.workers = workers or len(usable_cpus())
        self._cpu_affinity = cpu_affinity
        self._source = source
        self._threads = threads or DEFAULT_THREADS
        self._start_method = start_method
        self._logging = (verbosity, log_format)
        self._call_check = call_check
        self._executor: ProcessExecutor | None = None

    def create_executor(self, lua_style: bool) -> Executor:
        options = process_child.ChildOptions(self._source, self._threads, lua_style,
                                             *self._logging, call_check=self._call_check)
        self._executor = ProcessExecutor(options, self._start_method,
                                         worker_cpus(self.workers, self._cpu_affinity))
        self._executor.start_workers()
        return self._executor

    def loop_started(self, loop: IOLoop) -> None:
        if self._executor is not None:
            self._executor.attach(loop)

    def loop_finished(self) -> None:
        if self._executor is not None:
            self._executor.stop_workers()
