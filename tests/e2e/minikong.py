"""Run mini-Kong: real nginx + the Lua in ``lua/minikong/`` driving plugin servers over
MsgPack:1 or ProtoBuf:1 (whichever each server's ``--dump`` announces, as Kong does).

Used by the e2e tests (through ``conftest.py``) and by ``bench/gateway.py``. Nothing here
installs anything: the Debian packages must be present (:func:`missing_prerequisites` says
what is missing and how to install it).

A :class:`Gateway` is one nginx master with its own prefix in a directory of its own:
2 workers (so instances are per worker, as in Kong), the proxy on a free loopback port, the
echo upstream on a Unix socket inside the prefix, and ``minikong.json`` describing plugin
servers, routes and plugins. nginx runs in the foreground (``daemon off``) as a child of the
caller, readiness is each worker's "ready" line in the error log, and it is stopped by PID
(SIGQUIT, then SIGKILL for the master and its workers after a bound).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # imported as tests.e2e.minikong (bench/)
    from ..support.procstat import process_tree
    from ..support.waiting import poll_until, wait_until  # the e2e tests import it from here
except ImportError:  # as e2e.minikong: pytest puts tests/ on sys.path
    from support.procstat import process_tree  # type: ignore[no-redef]
    from support.waiting import poll_until, wait_until  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
LUA_DIR = HERE / "lua"

MODULES_DIR = Path("/usr/lib/nginx/modules")
LUA_SHARE = Path("/usr/share/lua/5.1")
APT_PACKAGES = "nginx libnginx-mod-http-lua lua-messagepack lua-cjson"
INSTALL_HINT = (
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
    f"--no-install-recommends {APT_PACKAGES} wrk curl"
)
# What each file proves is installed.
REQUIRED_FILES = {
    MODULES_DIR / "ndk_http_module.so": "libnginx-mod-http-ndk (a libnginx-mod-http-lua dep)",
    MODULES_DIR / "ngx_http_lua_module.so": "libnginx-mod-http-lua",
    LUA_SHARE / "resty" / "core.lua": "lua-resty-core (pulled in by libnginx-mod-http-lua)",
    LUA_SHARE / "MessagePack.lua": "lua-messagepack",
}
CJSON_SO = "cjson.so"

ERROR_LEVELS = re.compile(r"\[(error|crit|alert|emerg)\]")
WORKERS = 2
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def missing_prerequisites() -> list[str]:
    """What is missing to run mini-Kong (empty when everything is installed)."""
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx (package nginx)")
    for path, package in REQUIRED_FILES.items():
        if not path.exists():
            missing.append(f"{path} (package {package})")
    if not list(Path("/usr/lib").glob(f"*/lua/5.1/{CJSON_SO}")) and not (
        Path("/usr/lib/lua/5.1") / CJSON_SO
    ).exists():
        missing.append(f"lua 5.1 {CJSON_SO} (package lua-cjson)")
    return missing


def wait_for_lines(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The JSON lines of a log plugin's file, once there are ``count`` (log runs after the
    response, in a timer)."""

    def lines() -> list[str] | None:
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= count else None

    found = wait_until(lines, timeout, f"{count} lines in {path}",
                       lambda: path.read_text() if path.exists() else "(no file)")
    return [json.loads(line) for line in found]


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------- configuration


@dataclass
class PluginServer:
    """A ``pluginserver_names`` entry: where the server listens and how to ask for its plugins."""

    name: str
    socket: str
    query_cmd: str
    first_only: bool = False  # Kong 3.9+ reads only the first plugin of a dump
    start_cmd: str | None = None  # None: externally managed (the caller runs the server)

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "socket": self.socket,
                                 "query_cmd": self.query_cmd, "first_only": self.first_only}
        if self.start_cmd:
            entry["start_cmd"] = self.start_cmd
        return entry


@dataclass
class Route:
    name: str
    paths: list[str]
    strip_path: bool = False
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "paths": self.paths,
                "strip_path": self.strip_path}


@dataclass
class Plugin:
    """A plugin entity: scoped to a route by name, or global (``route=None``)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    route: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "name": self.name, "config": self.config}
        if self.route is not None:
            entry["route"] = self.route
        return entry


@dataclass
class GatewayConfig:
    servers: list[PluginServer]
    routes: list[Route]
    plugins: list[Plugin]
    rpc_timeout_ms: int = 60_000  # Kong sets no timeout: OpenResty's 60 s default
    debug_headers: bool = True  # X-Minikong-Worker on every response
    workspace_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    service_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def as_json(self) -> dict[str, Any]:
        return {
            "pluginservers": [s.as_json() for s in self.servers],
            "routes": [r.as_json() for r in self.routes],
            "plugins": [p.as_json() for p in self.plugins],
            "rpc_timeout_ms": self.rpc_timeout_ms,
            "workspace_id": self.workspace_id,
            "service_id": self.service_id,
        }


def routes_config(servers: Sequence[PluginServer], routes: Mapping[str, Sequence[Plugin]],
                  global_plugins: Sequence[Plugin] = (), **kw: Any) -> GatewayConfig:
    """``routes`` maps a path prefix to the plugins on it (the route is named after the path)."""
    route_list, plugins = [], list(global_plugins)
    for path, on_route in routes.items():
        name = path.strip("/").replace("/", "-") or "root"
        route_list.append(Route(name, [path]))
        for plugin in on_route:
            plugin.route = name
            plugins.append(plugin)
    return GatewayConfig(list(servers), route_list, plugins, **kw)


NGINX_CONF = """\
# mini-Kong (generated by tests/e2e/minikong.py): paths are relative to the -p prefix.
load_module {modules}/ndk_http_module.so;
load_module {modules}/ngx_http_lua_module.so;

{user}worker_processes {workers};
pid nginx.pid;
error_log logs/error.log {log_level};
events {{ worker_connections 4096; }}

http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    client_body_buffer_size 1m;
    client_max_body_size 8m;

    lua_package_path "{lua_dir}/?.lua;;";
    lua_socket_log_errors off;   # as in Kong: failures are logged by the caller
    lua_socket_pool_size 256;    # Kong's default per worker and socket
    lua_shared_dict minikong 1m;

    init_by_lua_block {{
        require("minikong.gateway").init("{config}")
    }}
    init_worker_by_lua_block {{
        require("minikong.gateway").init_worker()
    }}
    exit_worker_by_lua_block {{
        require("minikong.gateway").exit_worker()
    }}

    upstream service {{
        server unix:{upstream_socket};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port} reuseport;

        location / {{
            # here, not at server level: a server-level "set" would run again in the
            # buffered-proxy subrequest and wipe the value copied from this request
            set $upstream_uri '';
            rewrite_by_lua_block {{ require("minikong.gateway").rewrite() }}
            access_by_lua_block {{ require("minikong.gateway").access() }}
{header_filter}
            log_by_lua_block {{ require("minikong.gateway").log() }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://service$upstream_uri;
        }}

        # Kong's buffered proxying (plugins with a response phase): a subrequest to here
        location = /kong_buffered_http {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://service$upstream_uri;
        }}
    }}

    # the service: describes the request it received
    server {{
        listen unix:{upstream_socket};
        location / {{
            content_by_lua_block {{ require("minikong.upstream").serve() }}
        }}
    }}
}}
"""

HEADER_FILTER = (
    '            header_filter_by_lua_block { require("minikong.gateway").header_filter() }'
)


# ---------------------------------------------------------------------------- Lua one-offs


ONEOFF_CONF = """\
# a Lua one-off (generated by tests/e2e/minikong.py): runs in init_by_lua, then exits
load_module {modules}/ndk_http_module.so;
load_module {modules}/ngx_http_lua_module.so;
pid nginx.pid;
error_log stderr notice;
events {{ }}
http {{
    lua_package_path "{lua_dir}/?.lua;;";
    init_by_lua_block {{
        {code}
        os.exit(0)
    }}
}}
"""


def run_lua(code: str, prefix: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` once with nginx's LuaJIT and mini-Kong's modules on the path.

    Debian packages no standalone LuaJIT next to the nginx module, so the code runs in the
    master's ``init_by_lua`` and ends with ``os.exit(0)``: nginx never forks, binds or
    serves. A Lua error makes nginx exit non-zero with the error on stderr. ``timeout``
    bounds it (subprocess kills the process by its PID).
    """
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "oneoff.conf").write_text(ONEOFF_CONF.format(
        modules=MODULES_DIR, lua_dir=LUA_DIR, code=code))
    return subprocess.run(
        [nginx_binary(), "-p", str(prefix), "-c", "oneoff.conf", "-e", "stderr",
         "-g", "daemon off;"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _wait_or_kill(pidfds: dict[int, int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` for these processes (PID -> pidfd) to exit; SIGKILL the rest.

    They are not our children: a pidfd is how to wait for (and signal) exactly them.
    Returns the PIDs it had to kill (still running at the deadline): empty when every one
    exited by itself.
    """
    poller = select.poll()
    for fd in pidfds.values():
        poller.register(fd, select.POLLIN)
    left, deadline = dict(pidfds), time.monotonic() + timeout
    killed: list[int] = []
    try:
        while left:
            remaining = deadline - time.monotonic()
            # at the deadline, one last look without waiting: an exit just then still counts
            for fd, _ in poller.poll(max(remaining, 0) * 1000):
                poller.unregister(fd)
                left = {pid: f for pid, f in left.items() if f != fd}
            if remaining <= 0:
                break
        for pid, fd in left.items():
            with contextlib.suppress(ProcessLookupError):  # exited just now: not killed
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return killed


# ---------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self) -> Any:
        # the echo upstream copies request bodies into its JSON, bytes as they came
        return json.loads(self.body.decode("utf-8", "surrogateescape"))

    @property
    def worker(self) -> str | None:
        return self.header("x-minikong-worker")

    def __repr__(self) -> str:
        return f"<Response {self.status} {dict(self.headers)} {self.body[:300]!r}>"


def http_request(port: int, method: str, path: str, headers: Mapping[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 15.0,
                 header_list: Iterable[tuple[str, str]] = ()) -> Response:
    """One request on a new connection (so successive requests spread over the workers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        pairs = [*(headers or {}).items(), *header_list]
        has_host = any(name.lower() == "host" for name, _ in pairs)
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


# ---------------------------------------------------------------------------- nginx


class GatewayError(RuntimeError):
    """nginx did not start or stop; the message carries its output and error log."""


class Gateway:
    """One running mini-Kong (nginx master + workers) in its own prefix directory."""

    def __init__(self, prefix: Path, config: GatewayConfig, *, workers: int = WORKERS,
                 log_level: str = "notice", workers_as_caller: bool = False) -> None:
        self.prefix = prefix
        self.config = config
        # As root, nginx runs its workers as nobody (Kong: as kong), and so does a plugin
        # server a worker starts. This keeps them as the caller, when nobody cannot run it.
        self.workers_as_caller = workers_as_caller
        self.workers = workers
        self.log_level = log_level
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._allowed: list[re.Pattern[str]] = []
        self._output = prefix / "nginx.out"
        # PIDs of start_cmd plugin servers (and descendants) stop() had to SIGKILL because
        # they outlived nginx by its bound: a server must exit on its own (SIGTERM, parent)
        self.killed_servers: list[int] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self, attempts: int = 5) -> Gateway:
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        config_path = self.prefix / "minikong.json"
        config_path.write_text(json.dumps(self.config.as_json(), indent=1))
        for _ in range(attempts):
            self.port = free_port()
            self._write_conf(config_path)
            if self._launch():
                return self
        raise GatewayError(f"nginx could not bind a free port in {attempts} attempts:\n"
                           f"{self.output()}")

    def _write_conf(self, config_path: Path) -> None:
        user = ""
        if self.workers_as_caller and os.geteuid() == 0:
            user = "user root root;\n"
        conf = NGINX_CONF.format(
            user=user, modules=MODULES_DIR, workers=self.workers, log_level=self.log_level,
            lua_dir=LUA_DIR, config=config_path, port=self.port,
            upstream_socket=self.prefix / "upstream.sock",
            header_filter=HEADER_FILTER if self.config.debug_headers else "",
        )
        (self.prefix / "nginx.conf").write_text(conf)

    def _launch(self) -> bool:
        """Start nginx; True when every worker is ready, False if the port was taken."""
        log_path = self.prefix / "logs" / "error.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(self._output, "ab") as out:
            self.proc = subprocess.Popen(
                [nginx_binary(), "-p", str(self.prefix), "-c", "nginx.conf",
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        proc = self.proc
        ready = re.compile(r"\[minikong\] worker \d+ ready")

        def outcome() -> str | None:
            """Whether nginx is "ready" or its "port taken"; None while neither (any other
            exit raises)."""
            text = self._read_log(log_path, offset)
            if len(ready.findall(text)) >= self.workers:
                return "ready"
            if proc.poll() is not None:
                if "Address already in use" in self.output() + text:
                    # someone took the port between free_port() and nginx's bind: retry
                    self.allow_errors(rf"bind\(\) to 127\.0\.0\.1:{self.port} failed")
                    return "port taken"
                raise GatewayError(f"nginx exited with {proc.returncode}:\n"
                                   f"{self.output()}\n{text}")
            return None

        # bounded poll of an observable condition (the error log), every 10 ms
        result = poll_until(outcome, START_TIMEOUT)
        if result is not None:
            return result == "ready"
        self.stop()
        raise GatewayError(f"nginx workers not ready within {START_TIMEOUT}s:\n{self.output()}"
                           f"\n{self._read_log(log_path, offset)}")

    @staticmethod
    def _read_log(path: Path, offset: int) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful stop (SIGQUIT lets log timers finish); SIGKILL by PID after ``timeout``.

        The plugin servers worker 0 started (``start_cmd``) only get a SIGTERM from the
        exiting worker, as in Kong: they are waited for too, and killed after ``timeout``.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        servers: dict[int, int] = {}
        self._plugin_servers(servers)
        try:
            if proc.poll() is None:
                self._stop_nginx(proc, timeout)
        finally:
            self._plugin_servers(servers)  # any started since the first look
            self.killed_servers += _wait_or_kill(servers, timeout)

    def _stop_nginx(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        workers = self._children(proc.pid)
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout)
            raise GatewayError(f"nginx {proc.pid} ignored SIGQUIT for {timeout}s") from None

    def _plugin_servers(self, found: dict[int, int]) -> None:
        """Add PID -> pidfd of the live plugin servers worker 0 started, and descendants.

        The PIDs come from the "[pluginserver] started, pid N" log lines; one counts only
        while its command line is a ``start_cmd`` (not a later process that reused the PID).
        A pidfd keeps naming the same process until closed, whatever happens to the PID.
        """
        commands = {server.start_cmd for server in self.config.servers if server.start_cmd}
        if not commands:
            return
        for match in re.finditer(r"\[pluginserver\] started, pid (\d+)", self.error_log()):
            pid = int(match.group(1))
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip() \
                        .decode("utf-8", "replace") not in commands:
                    continue
                tree = process_tree(pid)
            except OSError:  # gone
                continue
            for member in tree:
                if member not in found:
                    with contextlib.suppress(OSError):
                        found[member] = os.pidfd_open(member)

    @staticmethod
    def _children(pid: int) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ traffic

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, **kw: Any) -> Response:
        return http_request(self.port, method, path, headers, body, **kw)

    def get(self, path: str, headers: Mapping[str, str] | None = None, **kw: Any) -> Response:
        return self.request("GET", path, headers, **kw)

    # ------------------------------------------------------------------ logs

    def output(self) -> str:
        try:
            return self._output.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def error_log(self) -> str:
        return self._read_log(self.prefix / "logs" / "error.log", 0)

    def log_lines(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.error_log().splitlines() if regex.search(line)]

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Lines of the error log matching ``pattern``, once there are ``count`` of them."""
        def lines() -> list[str] | None:
            found = self.log_lines(pattern)
            return found if len(found) >= count else None

        return wait_until(lines, timeout, f"{count} error-log lines matching {pattern!r}",
                          self.error_log)

    def allow_errors(self, *patterns: str) -> None:
        """Error-level lines matching these are expected (the test provokes them)."""
        self._allowed.extend(re.compile(p) for p in patterns)

    def unexpected_errors(self) -> list[str]:
        return [
            line for line in self.error_log().splitlines()
            if ERROR_LEVELS.search(line) and not any(p.search(line) for p in self._allowed)
        ]
