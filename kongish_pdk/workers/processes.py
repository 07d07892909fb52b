"""processes mode (-m): handlers run in worker processes, for plugins that need several cores.

The server process keeps the socket, the protocol and the runtime (one I/O thread, as in the
threads mode); ``ProcessExecutor`` sends each event to the least busy worker and routes its
Steps there, wherever they arrived. Plugin state is per worker (see ``process_child``).
A worker that dies is replaced (off the I/O thread), and its events are finished with an
error once it is reaped, right after its replacement starts.
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
from kongish_pdk.protocol.names import CallCheck
from kongish_pdk.runtime.events import Deliver, Event, Executor
from kongish_pdk.runtime.instances import Instance
from kongish_pdk.runtime.outcomes import RETURNED, Failed, PDKCall
from kongish_pdk.server.io_loop import IOLoop
from kongish_pdk.workers import process_child
from kongish_pdk.workers import process_pipe as msg
from kongish_pdk.workers.affinity import usable_cpus, worker_cpus
from kongish_pdk.workers.loop_worker import IOLoopWorker
from kongish_pdk.workers.pool import LockSlot, ThreadPool
from kongish_pdk.workers.priority import DEFAULT_WORKER_NICE
from kongish_pdk.workers.process_pipe import Pipe
from kongish_pdk.workers.threads import DEFAULT_THREADS

log = logging.getLogger("kongish_pdk.workers")

START_METHODS = ("forkserver", "spawn", "fork")
NO_WORKER = "no worker process is running (they died and could not be started again)"


@dataclass(eq=False)
class _Child:
    index: int
    process: Any  # multiprocessing.Process
    pipe: Pipe
    pid: int  # kept here: Process.pid raises ValueError once the dead worker's Process is closed
    events: dict[int, Event] = field(default_factory=dict)  # in flight here
    alive: bool = True  # False from the moment its channel is lost (guarded by the lock)


def _reap(process: Any, timeout: float) -> int | None:
    """Wait for a worker process to exit, killing it if it does not within ``timeout``; its
    exit code (None: still alive)."""
    process.join(timeout)
    if process.is_alive():  # it ignored STOP, or its channel is gone: it is of no use
        process.kill()
        process.join(timeout)
    code: int | None = process.exitcode
    return code


def _known(instance: Instance) -> set[_Child]:
    """The workers that were given this instance's config, so they have created its Plugin
    object or will on the event they were sent. By object, not index: a replacement takes its
    predecessor's index but has none of its objects."""
    known: set[_Child] = instance.executor_state.setdefault("known", set())
    return known


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
        # Requests (CONSTRUCT, DESTROY) waiting for a worker's DONE, by request id.
        self._pending: dict[int, tuple[LockSlot, _Child]] = {}
        self._blocking = ThreadPool(16, name="kongish-blocking")
        self._loop: IOLoop | None = None
        self._stopping = False
        # Held while a replacement worker starts, so stop_workers sees it or none starts.
        self._replacing = threading.Lock()

    # ------------------------------------------------------------------ worker processes

    def start_workers(self) -> None:
        for index in range(len(self._cpus)):
            self._children.append(self._spawn(index))
        nice = self._options.nice
        log.info("started %d worker processes (%s)%s", len(self._cpus), ", ".join(
            f"{c.pid}" + ("" if cpu is None else f" on CPU {cpu}")
            for c, cpu in zip(self._children, self._cpus, strict=True)),
            f", {nice} nice steps below the server" if nice else "")

    def _spawn(self, index: int) -> _Child:
        """Start a worker process; raises (and leaks no descriptor) if it cannot."""
        ours, theirs = socket.socketpair()
        try:
            process = self._context.Process(  # type: ignore[attr-defined]
                target=process_child.main, args=(theirs, self._options, self._cpus[index]),
                name=f"kongish-worker-{index}", daemon=True)
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Child(index, process, Pipe(ours), process.pid)

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
        """After the loop: stop the live workers (dead ones belong to their _replace)."""
        with self._replacing:  # a replacement being started is in the list; no more start
            self._stopping = True
        with self._lock:
            children = [child for child in self._children if child.alive]
        for child in children:
            with contextlib.suppress(OSError):
                child.pipe.send([msg.STOP])
        for child in children:
            _reap(child.process, timeout)
            child.pipe.close()
        # Nothing reads the channels any more: a CONSTRUCT or DESTROY still waiting (e.g.
        # the close() of an instance abort_all finished) would wait forever.
        with self._lock:
            for child in children:
                child.alive = False  # so a later request fails at once instead of waiting
            waiting = self._take_pending(None)
        self._release(waiting, "the server stopped")

    def _readable(self, child: _Child) -> None:
        """On the I/O loop's thread: outcomes and answers coming back from a worker."""
        try:
            self._read(child)
        except Exception:  # a bug must cost one worker's channel, never the server
            log.exception("unexpected error on the channel of worker process %d; replacing it",
                          child.pid)
            self._lost(child, kill=True)

    def _read(self, child: _Child) -> None:
        try:
            messages = child.pipe.available()
        except (EOFError, OSError):  # the worker exited
            self._lost(child)
            return
        for message in messages:
            self._handle(child, message)

    def _handle(self, child: _Child, message: list[Any]) -> None:
        kind = message[0]
        if kind == msg.DONE:
            with self._lock:
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
                # Rare: the worker already ran the protocol's call check, so only a value
                # that check let through and the encoder refused gets here. The handler
                # waits for this call: make it raise there, as it would in-process.
                self.resume(event, None, f"{type(exc).__name__}: {exc}")

    def _take_pending(self, owner: _Child | None) -> list[LockSlot]:
        """Remove the requests waiting for ``owner`` (None: for any worker); hold the lock."""
        taken = [request for request, (_, child) in self._pending.items()
                 if owner is None or child is owner]
        return [self._pending.pop(request)[0] for request in taken]

    @staticmethod
    def _release(waiting: list[LockSlot], why: str) -> None:
        """Answer requests no worker will answer: ``_request`` returns ``why`` as the error."""
        for slot in waiting:
            slot.put(why)

    def _lost(self, child: _Child, kill: bool = False) -> None:
        """On the loop's thread: stop using a worker whose channel ended (or cannot be read,
        ``kill``); its events and requests are answered once it is reaped, off this thread."""
        with self._lock:  # no event or request is added to a dead worker after this
            if not child.alive:
                return
            child.alive = False
            orphans = list(child.events.values())
            child.events.clear()
            waiting = self._take_pending(child)
        assert self._loop is not None
        self._loop.unwatch(child.pipe.fd)
        if kill:  # first: a send blocked on its full channel then fails and lets close() in
            child.process.kill()
        child.pipe.close()
        try:
            threading.Thread(target=self._replace, args=(child, orphans, waiting),
                             name="kongish-replace-worker", daemon=True).start()
        except RuntimeError:  # no thread to spare: a stalled loop beats a worker lost for good
            self._replace(child, orphans, waiting)

    def _replace(self, child: _Child, orphans: list[Event], waiting: list[LockSlot]) -> None:
        """Reap a dead worker, answer what waited on it, start its replacement.

        A thread of its own, not run_blocking: the requests waiting here may be holding
        every thread of that pool.
        """
        code = _reap(child.process, 1.0)
        self._release(waiting, f"worker process {child.pid} exited ({code})")
        self._respawn(child, code, len(orphans))
        # Its sentinel descriptor, now rather than at GC, but after the respawn: with the
        # descriptors at their limit, one freed first let the replacement fail later, halfway
        # through starting, instead of at its socketpair (tests/test_processes.py).
        if code is not None:
            child.process.close()
        # After the replacement, so a retry finds a full set of workers. At shutdown the
        # runtime already finished them all (abort_all, before stop_workers): it answers
        # nothing more for a FINISHED event, so this cannot answer the gateway twice.
        for event in orphans:
            self._deliver_safely(event, Failed(
                f"the worker process running it died (exit code {code})"))

    def _respawn(self, child: _Child, code: int | None, in_flight: int) -> None:
        """Start a worker in a dead one's place, unless the server is stopping."""
        with self._replacing:
            if self._stopping:
                return
            log.error("worker process %d exited (%s) with %d event(s) in flight; replacing it",
                      child.pid, code, in_flight)
            try:
                replacement = self._spawn(child.index)
            except Exception as exc:  # e.g. EMFILE: serve on with the workers left
                log.error("cannot start a worker process to replace %d: %s: %s",
                          child.pid, type(exc).__name__, exc)
                return
            with self._lock:
                self._children[child.index] = replacement
            with contextlib.suppress(ValueError):  # the loop just ended: stop_workers stops it
                self._watch(replacement)

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
        gone = f"worker process {child.pid} is gone"
        with self._lock:  # with the alive check, so _lost or stop_workers answer it or it fails
            if not child.alive:
                return gone
            self._pending[request] = (slot, child)
        try:
            child.pipe.send([kind, request, *args])
        except OSError:
            with self._lock:
                self._pending.pop(request, None)
            return gone
        answer: str | None = slot.take()
        return answer

    def construct(self, instance: Instance) -> None:
        """Create the plugin in one worker now, so a failing __init__ fails StartInstance."""
        child = self._least_busy()
        if child is None:
            raise RuntimeError(NO_WORKER)
        error = self._request(child, msg.CONSTRUCT, instance.id, instance.spec.name,
                              instance.config)
        if error is not None:
            raise RuntimeError(error)
        _known(instance).add(child)

    def destroy(self, instance: Instance) -> None:
        """Close the plugin in every worker that created it; returns when all have."""
        for child in sorted(_known(instance), key=lambda c: c.index):
            if child.alive:
                self._request(child, msg.DESTROY, instance.id)

    def start(self, event: Event) -> None:
        instance = event.instance
        with self._lock:
            child = self._least_busy_locked()
            if child is not None:
                child.events[event.id] = event
        if child is None:  # every worker died and none could be started again
            self._deliver_safely(event, Failed(NO_WORKER))
            return
        known = _known(instance)
        config = None if child in known else instance.config
        known.add(child)
        event.handle = child
        with contextlib.suppress(OSError):  # it just died: _lost fails the event with the rest
            child.pipe.send([msg.START, event.id, instance.id, event.phase, instance.spec.name,
                             config])

    def resume(self, event: Event, value: Any, error: str | None) -> None:
        self._send(event, [msg.RESUME, event.id, value, error])

    def abort(self, event: Event, waiting: bool) -> None:
        self._send(event, [msg.ABORT, event.id, waiting])

    def _send(self, event: Event, message: list[Any]) -> None:
        child: _Child | None = event.handle
        if child is None:  # failed in start(): no worker ever had it
            return
        with contextlib.suppress(OSError):  # the worker died: _lost finishes its events
            child.pipe.send(message)

    def _least_busy(self) -> _Child | None:
        with self._lock:
            return self._least_busy_locked()

    def _least_busy_locked(self) -> _Child | None:
        """The live worker with the fewest events in flight (None if none lives); ties take
        turns, so even a stream of one-at-a-time events for one instance uses every worker."""
        live = [c for c in self._children if c.alive]
        if not live:
            return None
        first = next(self._turn) % len(live)
        rotated = live[first:] + live[:first]
        return min(rotated, key=lambda c: len(c.events))


class ProcessWorker(IOLoopWorker):
    name: ClassVar[str] = "processes"

    def __init__(self, source: PluginSource, *, workers: int | None = None,
                 threads: int | None = None, start_method: str = "forkserver",
                 cpu_affinity: str = "auto", nice: int = DEFAULT_WORKER_NICE,
                 verbosity: int = 0, log_format: str = "text",
                 call_check: CallCheck | None = None) -> None:
        super().__init__()
        self.workers = workers or len(usable_cpus())
        self._cpu_affinity = cpu_affinity
        self._nice = nice
        self._source = source
        self._threads = threads or DEFAULT_THREADS
        self._start_method = start_method
        self._logging = (verbosity, log_format)
        self._call_check = call_check
        self._executor: ProcessExecutor | None = None

    def create_executor(self, lua_style: bool) -> Executor:
        options = process_child.ChildOptions(self._source, self._threads, lua_style,
                                             *self._logging, call_check=self._call_check,
                                             nice=self._nice)
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
