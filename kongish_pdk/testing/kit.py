"""The plugin testing kit: run a plugin against a fake request, in-process or over the wire.

::

    kit = Kit("local")                      # or Kit("wire"): a real server, the real protocol
    plugin = kit.load("plugins/py-hello.py", {"message": "hi"})
    result = plugin.run(Request(headers={"host": "example.com"}))
    assert result.response.header("x-hello-from-python") == "Python says hi to example.com"

``run`` plays one request through the lifecycle Kong gives an external plugin: rewrite ->
access -> (the fake upstream) -> response -> log, skipping the phases the plugin does not
implement and, after ``kong.response.exit``, the request phases Kong would skip. Both modes
answer the PDK from the same :class:`~kongish_pdk.testing.fake_kong.GatewayState`; only
the path differs: in-process through ``surface.Kong(PDK(FakeKong))``, over the wire through a
real ``kongish-pluginserver`` driven by :class:`~kongish_pdk.testing.kong_client.KongClient`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from kongish_pdk.errors import EventStopped, RPCError
from kongish_pdk.pdk.bridge import PDK
from kongish_pdk.pdk.surface import Kong
from kongish_pdk.plugin.loader import load_file
from kongish_pdk.plugin.spec import PluginSpec
from kongish_pdk.runtime.handler import failure
from kongish_pdk.runtime.instances import decode_config, new_instance
from kongish_pdk.runtime.local import close_plugin, construct_plugin
from kongish_pdk.runtime.runtime import FAIL_CLOSED_CALLS
from kongish_pdk.testing import luamsgpack
from kongish_pdk.testing.errors import ConfigRejected, PluginError
from kongish_pdk.testing.fake_kong import (
    CallRecord,
    ExitInfo,
    FakeKong,
    GatewayState,
    LogLine,
    PhaseRun,
)
from kongish_pdk.testing.http import (
    ClientResponse,
    Request,
    ServiceRequest,
    Upstream,
    UpstreamResponse,
)
from kongish_pdk.testing.kong_client import KongClient, RemoteError
from kongish_pdk.testing.kong_config import kong_config
from kongish_pdk.testing.kong_worker import start_config
from kongish_pdk.testing.server_process import ServerProcess, start_server

Mode = Literal["local", "wire"]
MODES: tuple[Mode, ...] = ("local", "wire")


@dataclass
class Result:
    """Everything one request produced."""

    response: ClientResponse  # what the client received
    service_request: ServiceRequest | None  # what the upstream received (None: not proxied)
    exit: ExitInfo | None  # the kong.response.exit/error that ended it, if any
    phases: list[str]  # the plugin phases that ran, in order
    logs: list[LogLine]
    ctx_shared: dict[str, Any]
    calls: list[CallRecord]  # every PDK call: (phase, name, args)
    serialized: dict[str, Any] | None  # kong.log.serialize() of the log phase, decoded
    proxy: dict[str, Any]  # kong.service.set_target/set_retries/... and similar settings
    errors: list[PhaseRun] = field(default_factory=list)  # phases where the plugin raised

    def log_messages(self, level: str | None = None) -> list[str]:
        return [line.message for line in self.logs if level is None or line.level == level]

    def called(self, name: str) -> list[CallRecord]:
        return [c for c in self.calls if c.name == name]


class Runner(Protocol):
    """Runs one phase of a started plugin instance against a FakeKong."""

    def run_event(self, phase: str, backend: FakeKong) -> PhaseRun: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- in-process

class LocalRunner:
    """The plugin object lives in this process; its ``kong`` is the typed surface."""

    def __init__(self, spec: PluginSpec, config: dict[str, Any], plugin_id: str,
                 lua_style: bool) -> None:
        self.spec = spec
        self.lua_style = lua_style
        # The Config JSON a Kong worker sends, through the server's own StartInstance steps.
        raw = json.dumps(start_config(spec.name, config, plugin_id=plugin_id))
        try:
            instance = new_instance(spec, 1, decode_config(spec.name, raw))
        except (RPCError, ValueError, TypeError) as exc:
            raise ConfigRejected(str(exc)) from exc
        try:
            self.plugin = construct_plugin(instance)
        except Exception as exc:
            raise ConfigRejected(f"plugin {spec.name!r} failed to start: "
                                 f"{failure(exc).error}") from exc

    def run_event(self, phase: str, backend: FakeKong) -> PhaseRun:
        method = getattr(self.plugin, phase)
        try:
            returned = method(Kong(PDK(backend, self.lua_style)))
            if inspect.isawaitable(returned):
                close = getattr(returned, "close", None)
                if callable(close):
                    close()
                raise TypeError(f"Plugin.{phase} is a coroutine function: the plugin server "
                                f"calls phase methods synchronously, so its body never runs")
        except EventStopped:
            return PhaseRun(phase)
        except Exception as exc:
            failed = failure(exc)
            run = PhaseRun(phase, failed.error, failed.traceback, exc)
            call = FAIL_CLOSED_CALLS.get(phase)
            if call is not None and not backend.stopped:
                # What --on-plugin-error=fail-closed sends, as WireRunner replays it.
                backend.call(call.method, list(call.args))
            return run
        return PhaseRun(phase)

    def close(self) -> None:
        close_plugin(self.spec.name, 1, self.plugin)


# ---------------------------------------------------------------------- over the wire

def to_lua(value: Any) -> Any:
    """An answer as Kong's lua-MessagePack would write it (an empty table is an array)."""
    if isinstance(value, Mapping):
        return {k: to_lua(v) for k, v in value.items()} if value else luamsgpack.EMPTY_TABLE
    if isinstance(value, list | tuple):
        return [to_lua(v) for v in value] if value else luamsgpack.EMPTY_TABLE
    return value


def _failure(lines: Sequence[str], event_id: int) -> tuple[str, str] | None:
    """The server's log record of a handler failure for this event: (error, traceback)."""
    pattern = re.compile(rf"event #{event_id} (?:failed \([^)]*\)|raised after its response "
                         rf"was sent): (?P<error>[^\n]*)\n?(?P<tb>.*)", re.DOTALL)
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found = pattern.search(str(record.get("message", "")))
        if found:
            return found.group("error"), found.group("tb")
    return None


class WireRunner:
    """The plugin runs in a real server process; the kit plays Kong on its socket."""

    def __init__(self, server: ServerProcess, spec: PluginSpec, config: dict[str, Any],
                 plugin_id: str) -> None:
        self.server = server
        self.client = KongClient(server.socket_path)
        try:
            self.instance_id = self.client.start_instance(spec.name, config,
                                                          plugin_id=plugin_id)
        except RemoteError as exc:
            self.client.close()
            raise ConfigRejected(str(exc)) from None

    def run_event(self, phase: str, backend: FakeKong) -> PhaseRun:
        self.server.sync_log()
        mark = len(self.server.lines)

        def answer(method: str, args: list[Any]) -> Any:
            return to_lua(backend.call(method, args))

        trace = self.client.run_event(self.instance_id, phase, answer)
        if trace.ended_by != "ret":  # exit/error: Kong applies it without answering
            backend.call(trace.ended_by, trace.exit_args or [])
        # The server logs a failure before it answers, so syncing on its stderr now is
        # enough to see it; no waiting.
        self.server.sync_log()
        failed = _failure(self.server.lines[mark:], trace.event_id)
        if failed is None:
            return PhaseRun(phase)
        return PhaseRun(phase, failed[0], failed[1])

    def close(self) -> None:
        with contextlib.suppress(RemoteError, OSError):  # the test may have stopped it
            self.client.close_instance(self.instance_id)
        self.client.close()


# ---------------------------------------------------------------------- the harness

class PluginHarness:
    """One started plugin instance (one config) that requests can be played against."""

    def __init__(self, spec: PluginSpec, runner: Runner, plugin_id: str) -> None:
        self.spec = spec
        self.runner = runner
        self.plugin_id = plugin_id

    @property
    def plugin(self) -> Any:
        """The Plugin object (in-process only), to inspect its state in a test."""
        plugin = getattr(self.runner, "plugin", None)
        if plugin is None:
            raise AttributeError("over the wire the Plugin object lives in the server process")
        return plugin

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()

    def run(self, request: Request | None = None, *,
            upstream: Upstream | None = None, raise_errors: bool = True) -> Result:
        """Play one request through every phase the plugin implements.

        ``upstream`` answers for the service (default: 200, no headers, empty body). If the
        plugin raised, :class:`PluginError` is raised after the request completed, unless
        ``raise_errors=False`` (then see ``result.errors`` and the fail-closed response).
        """
        state = GatewayState(request or Request(), self.plugin_id)
        runs: list[PhaseRun] = []
        for phase in ("rewrite", "access"):
            if state.exit is None and phase in self.spec.phases:
                runs.append(self._event(phase, state))
        if state.exit is None:
            state.proxy(upstream or UpstreamResponse())
            if "response" in self.spec.phases:
                runs.append(self._event("response", state))
        if "log" in self.spec.phases:
            state.take_snapshot()
            runs.append(self._event("log", state))
        return self._result(state, runs, raise_errors)

    def run_phase(self, phase: str, request: Request | None = None, *,
                  upstream: Upstream | None = None, raise_errors: bool = True) -> Result:
        """Run a single phase; ``response`` and ``log`` first proxy to ``upstream``."""
        if phase not in self.spec.phases:
            raise ValueError(f"plugin {self.spec.name!r} has no {phase!r} phase "
                             f"(it implements: {', '.join(self.spec.phases)})")
        state = GatewayState(request or Request(), self.plugin_id)
        if phase in ("response", "log"):
            state.proxy(upstream or UpstreamResponse())
        if phase == "log":
            state.take_snapshot()
        return self._result(state, [self._event(phase, state)], raise_errors)

    def _event(self, phase: str, state: GatewayState) -> PhaseRun:
        state.phase = phase
        run = self.runner.run_event(phase, FakeKong(state))
        if state.violations:  # Kong would have raised a Lua error: never a passing test
            raise state.violations[0]
        return run

    def _result(self, state: GatewayState, runs: list[PhaseRun], raise_errors: bool) -> Result:
        errors = [r for r in runs if r.error is not None]
        if raise_errors and errors:
            first = errors[0]
            raise PluginError(first.phase, first.error or "", first.traceback) from first.cause
        return Result(
            response=state.client_response(),
            service_request=state.sent,
            exit=state.exit,
            phases=[r.phase for r in runs],
            logs=list(state.logs),
            ctx_shared=dict(state.ctx_shared),
            calls=list(state.calls),
            serialized=json.loads(state.snapshot) if state.snapshot else None,
            proxy=dict(state.proxy_settings),
            errors=errors,
        )


# ---------------------------------------------------------------------- servers and kits

class ServerPool:
    """Real plugin servers for wire-mode tests, one per (plugin folder, flags), reused."""

    def __init__(self) -> None:
        self._servers: dict[tuple[Path, tuple[str, ...]], ServerProcess] = {}

    def get(self, plugins_dir: Path, flags: Sequence[str]) -> ServerProcess:
        key = (plugins_dir, tuple(flags))
        server = self._servers.get(key)
        if server is None or server.proc.poll() is not None:
            # JSON logs, so the kit can read failures back; a short event timeout, so an
            # event orphaned by a kit violation does not linger.
            server = start_server(plugins_dir, "--log-format", "json", "--event-timeout", "5",
                                  *flags)
            self._servers[key] = server
        return server

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


class Kit:
    """Loads plugins for tests, in-process (``"local"``) or behind a real server (``"wire"``).

    Use it as a context manager (or call ``close()``): it closes every plugin instance and
    stops the servers it started.
    """

    def __init__(self, mode: Mode = "local", *, lua_style: bool = False,
                 server_flags: Sequence[str] = (), servers: ServerPool | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'local' or 'wire', not {mode!r}")
        self.mode = mode
        self.lua_style = lua_style
        self.server_flags = tuple(server_flags) + (("--lua-style",) if lua_style else ())
        self._own_servers = servers is None
        self._servers = servers or ServerPool()
        self._harnesses: list[PluginHarness] = []

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, plugin: str | Path, config: Mapping[str, Any] | None = None) -> PluginHarness:
        """Start an instance of the plugin in ``plugin`` (a ``.py`` file or a package folder).

        ``config`` is completed as Kong would (schema defaults, nulls); a config Kong or the
        plugin server would refuse raises :class:`ConfigRejected`.
        """
        path = Path(plugin).resolve()
        spec = load_file(path)
        full = kong_config(spec.schema, config)
        plugin_id = str(uuid.uuid4())
        runner: Runner
        if self.mode == "local":
            runner = LocalRunner(spec, full, plugin_id, self.lua_style)
        else:
            server = self._servers.get(path.parent, self.server_flags)
            runner = WireRunner(server, spec, full, plugin_id)
        harness = PluginHarness(spec, runner, plugin_id)
        self._harnesses.append(harness)
        return harness

    def close(self) -> None:
        for harness in self._harnesses:
            harness.close()
        self._harnesses.clear()
        if self._own_servers:
            self._servers.close()
