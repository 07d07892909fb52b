"""Assembles a running server: worker + runtime + socket + protocol, then serves until told
to stop (SIGTERM/SIGINT, or the parent process going away)."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kongish_pdk._version import __version__
from kongish_pdk.plugin.spec import PluginSpec
from kongish_pdk.protocol import kong_msgpack
from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME, Transport
from kongish_pdk.protocol.names import MSGPACK, PROTOBUF, protocol_name
from kongish_pdk.runtime.runtime import Runtime, RuntimeOptions
from kongish_pdk.server.lifecycle import ParentWatch
from kongish_pdk.server.listener import bind_unix
from kongish_pdk.workers.base import ServeContext, Session, Worker

log = logging.getLogger("kongish_pdk.server")


@dataclass(frozen=True)
class ServerOptions:
    socket_path: str
    socket_mode: int = 0o600
    backlog: int = 4096
    lua_style: bool = False
    protocol: str = MSGPACK  # or PROTOBUF
    max_frame: int = DEFAULT_MAX_FRAME
    drain_timeout: float = 2.0
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def serve(worker: Worker, specs: Sequence[PluginSpec], options: ServerOptions,
          parent: ParentWatch) -> int:
    """Serve until stopped; returns the process exit status."""
    executor = worker.create_executor(options.lua_style)
    runtime = Runtime(specs, executor, options.runtime)
    listener = bind_unix(options.socket_path, options.socket_mode, options.backlog)

    new_session = _session_factory(runtime, options)

    def check_parent() -> None:
        if parent.parent_gone():
            log.warning("parent process %d exited; stopping", parent.ppid)
            worker.stop()

    ctx = ServeContext(listener, new_session, runtime, drain_timeout=options.drain_timeout,
                       extra_tick=check_parent)
    names = ", ".join(s.name for s in specs)
    log.info("kongish-pdk %s (pid %d, %s mode, %s) serving %s on %s", __version__, os.getpid(),
             worker.name, protocol_name(options.protocol), names, listener.path)
    # What start-up created (modules, plugin classes, protobuf descriptors) lives as long as
    # the server: keep the cyclic collector from walking it again in every full collection
    # (tens of ms each, every few seconds under load).
    gc.collect()
    gc.freeze()
    try:
        worker.serve(ctx)
    finally:
        listener.remove()
    log.info("stopped")
    return 0


def _session_factory(runtime: Runtime, options: ServerOptions) -> Callable[[Transport], Session]:
    if options.protocol == PROTOBUF:
        from kongish_pdk.protocol.protobuf import session as pb  # imports protobuf

        def new_pb_session(transport: Transport) -> Session:
            return pb.Session(runtime, transport, options.max_frame)

        return new_pb_session

    def new_session(transport: Transport) -> Session:
        return kong_msgpack.Session(runtime, transport, options.max_frame)

    return new_session
