"""Fixtures of the e2e suite: our plugin server, in every concurrency mode, behind mini-Kong.

Every test gets a fresh directory (world-traversable: when the tests run as root, nginx's
workers run as ``nobody`` like Kong's run as ``kong``, and must reach the plugin server's
socket, which is created ``--socket-mode 0666``), a plugin server started in the test's mode
(the ``mode`` fixture of ``tests/conftest.py``, so new modes join automatically), and nginx
processes it starts on demand. At the end nginx is stopped first (log timers finish), then
the server; then nginx's error log must hold no ``[error]``/``[crit]``/``[alert]``/
``[emerg]`` line and the server's log no ERROR line beyond those the test declared.

The server speaks MsgPack:1 unless the test asks for the ``protocol`` fixture's other value:
``@BOTH_PROTOCOLS`` (or ``@pytest.mark.parametrize("protocol", ["protobuf"])``) runs a test
over ProtoBuf:1 too, with ``--protocol protobuf`` given to the server and to its dump, so
mini-Kong picks the protocol from the dump as Kong does.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kongish_pdk.testing import ServerProcess, start_server

from .minikong import (
    INSTALL_HINT,
    Gateway,
    GatewayError,
    Plugin,
    PluginServer,
    missing_prerequisites,
    routes_config,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN_SOURCES = (ROOT / "plugins", HERE / "plugins")
SKIP_ENV = "KONGISH_SKIP_E2E"
KEEP_ENV = "KONGISH_E2E_KEEP"  # =1: keep each test's directory (configs, logs) for a look
RPC_TIMEOUT_MS = 10_000  # Kong waits 60 s; a broken test should fail sooner
SERVER_FLAGS = ("--socket-mode", "0666", "--event-timeout", "10")
PROTOCOLS = ("msgpack", "protobuf")  # the server's --protocol choices
BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", PROTOCOLS)


def mode_flags(mode: str) -> list[str]:
    """``MODE_FLAGS[mode]`` of ``tests/conftest.py`` (one list of modes for every suite)."""
    root_conftest = ROOT / "tests" / "conftest.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == root_conftest:
            return list(module.MODE_FLAGS[mode])
    raise RuntimeError(f"{root_conftest} is not loaded; run the e2e tests with pytest")


@pytest.fixture(scope="session")
def gateway_prerequisites() -> None:
    """Fail (not skip) when the Debian packages are missing, unless explicitly told to skip."""
    missing = missing_prerequisites()
    if not missing:
        return
    message = ("the e2e tests drive a real nginx + Lua gateway and need Debian packages; "
               "missing:\n  " + "\n  ".join(missing) + f"\ninstall them with:\n  {INSTALL_HINT}")
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: {message}")
    pytest.fail(f"{message}\n(or set {SKIP_ENV}=1 to skip these tests on purpose)",
                pytrace=False)


class E2E:
    """One test's world: a plugin directory, a plugin server, and any number of gateways."""

    def __init__(self, root: Path, mode: str, protocol: str = "msgpack") -> None:
        self.root = root
        self.mode = mode
        self.protocol = protocol
        self.plugins_dir = root / "plugins"
        self.kong_prefix = root / "kong"
        self.server: ServerProcess | None = None
        self.gateways: list[Gateway] = []
        self.stopped_servers: list[ServerProcess] = []
        self._server_errors_allowed: list[str] = []
        self.plugins_dir.mkdir()
        self.kong_prefix.mkdir()
        for source in PLUGIN_SOURCES:
            for path in sorted(source.glob("*.py")):
                (self.plugins_dir / path.name).symlink_to(path)

    # ------------------------------------------------------------------ plugin server

    @property
    def protocol_flags(self) -> list[str]:
        return ["--protocol", self.protocol]

    @property
    def protobuf(self) -> bool:
        return self.protocol == "protobuf"

    def start_server(self, *flags: str) -> ServerProcess:
        """Our server in this test's mode (Kong's "externally managed" plugin server)."""
        assert self.server is None, "a server is already running"
        self.server = start_server(self.plugins_dir, *mode_flags(self.mode), *SERVER_FLAGS,
                                   *self.protocol_flags, *flags, prefix=str(self.kong_prefix))
        self._flags = flags
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.stopped_servers.append(self.server)
            self.server = None

    def restart_server(self) -> ServerProcess:
        flags = self._flags
        self.stop_server()
        return self.start_server(*flags)

    def plugin_server(self, name: str = "kongish", *, plugin: str | None = None) -> PluginServer:
        """The pluginserver entry Kong would have: socket and query_cmd (``--dump``)."""
        assert self.server is not None
        dump = f"--dump-plugin-info {plugin}" if plugin else "--dump-all-plugins"
        query = (f"{sys.executable} -m kongish_pdk.cli -d {self.plugins_dir} "
                 f"--protocol {self.protocol} {dump}")
        return PluginServer(name, self.server.socket_path, query, first_only=plugin is not None)

    def supervised_server(self, name: str = "kongish") -> PluginServer:
        """A pluginserver entry with a start_cmd: nginx's worker 0 starts and restarts it."""
        flags = " ".join([*mode_flags(self.mode), *SERVER_FLAGS])
        base = f"{sys.executable} -m kongish_pdk.cli -d {self.plugins_dir} " \
               f"--protocol {self.protocol}"
        return PluginServer(name, str(self.kong_prefix / "kongish_pluginserver.socket"),
                            f"{base} --dump-all-plugins",
                            start_cmd=f"{base} -p {self.kong_prefix} {flags}")

    def allow_server_errors(self, *patterns: str) -> None:
        self._server_errors_allowed.extend(patterns)

    # ------------------------------------------------------------------ gateways

    def gateway(self, routes: Mapping[str, Sequence[Plugin]], global_plugins: Sequence[Plugin] = (),
                *, servers: Sequence[PluginServer] | None = None, server_flags: Sequence[str] = (),
                **config: Any) -> Gateway:
        """Start mini-Kong (and our server first, if not running and not supervised)."""
        if self.server is None and servers is None:
            self.start_server(*server_flags)
        config.setdefault("rpc_timeout_ms", RPC_TIMEOUT_MS)
        gateway_config = routes_config(servers or [self.plugin_server()], routes,
                                       global_plugins, **config)
        prefix = self.root / f"nginx{len(self.gateways)}"
        # a server nginx starts runs as nginx's workers: as the caller, who can run our venv
        supervised = any(server.start_cmd for server in gateway_config.servers)
        gateway = Gateway(prefix, gateway_config, workers_as_caller=supervised)
        self.gateways.append(gateway)
        gateway.start()
        # mini-Kong chose the protocol from the dump, as Kong does: make sure it is this one
        spoken = "ProtoBuf:1" if self.protobuf else "MsgPack:1"
        assert gateway.log_lines(rf"\[minikong\] pluginserver \S+ speaks {spoken}"), \
            gateway.error_log()
        return gateway

    def path(self, name: str) -> Path:
        """A file the plugin server may write (log plugins)."""
        return self.root / name

    # ------------------------------------------------------------------ teardown

    def close(self) -> list[str]:
        """Stop everything by PID; return the problems found in the logs."""
        problems: list[str] = []
        try:
            for gateway in self.gateways:  # each on its own: one failure stops no other
                try:
                    gateway.stop()
                except GatewayError as error:
                    problems.append(f"nginx stop: {error}")
                except Exception as error:  # any other failure: reported too, and the loop goes on
                    problems.append(f"nginx stop: {type(error).__name__}: {error}")
        finally:
            self.stop_server()
        for gateway in self.gateways:  # a start_cmd server must exit with nginx by itself
            problems += [f"plugin server {pid} (start_cmd) outlived nginx; killed by PID"
                         for pid in gateway.killed_servers]
        for gateway in self.gateways:
            problems += [f"nginx error log: {line}" for line in gateway.unexpected_errors()]
        for server in self.stopped_servers:
            problems += [f"plugin server log: {line}" for line in server.log.splitlines()
                         if _server_error(line, self._server_errors_allowed)]
        for gateway in self.gateways:  # a server nginx started writes to nginx's error log
            problems += [f"plugin server log (via nginx): {line}"
                         for line in gateway.error_log().splitlines()
                         if _server_error(line, self._server_errors_allowed)]
        return problems


def _server_error(line: str, allowed: Sequence[str]) -> bool:
    if not re.search(r"\b(ERROR|CRITICAL)\b", line):
        return False
    return not any(re.search(p, line) for p in allowed)


@pytest.fixture
def protocol() -> str:
    """MsgPack:1 unless a test parametrizes ``protocol`` (``BOTH_PROTOCOLS``)."""
    return "msgpack"


@pytest.fixture
def e2e(gateway_prerequisites: None, mode: str, protocol: str) -> Iterator[E2E]:
    # A directory of its own, not pytest's tmp_path: that one is private to its owner, and
    # nginx's workers (nobody, when the tests run as root) must reach the sockets inside.
    root = Path(tempfile.mkdtemp(prefix="minikong-"))
    root.chmod(0o755)
    world = E2E(root, mode, protocol)
    try:
        yield world
    finally:
        problems = world.close()
    if os.environ.get(KEEP_ENV) != "1":
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("unexpected errors in the logs:\n" + "\n".join(problems), pytrace=False)
