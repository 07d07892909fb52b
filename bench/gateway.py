#!/usr/bin/env python3
"""wrk through mini-Kong (real nginx + Lua): our server versus kong-pdk 0.36, same gateway.

Every target is one mini-Kong (2 nginx workers) with a route ``/hello``:

* ``nginx, no plugin``  the same route with no plugin: mini-Kong's router + proxying only,
                        the ceiling any plugin server can reach on this machine;
* ``kongish <mode>``    ``plugins/py-hello.py`` on our server, in each concurrency mode that
                        this checkout has (threads, -g, -m), over MsgPack:1;
* ``kongish <mode> ProtoBuf:1``  the same over ProtoBuf:1 (mini-Kong reads the protocol
                        from the dump and speaks it, as Kong does);
* ``kong-pdk <mode>``   the same plugin (``bench/incumbent_plugins/py-hello.py``) on kong-pdk
                        0.36 (installed by ``tests/support/incumbent.py``), threads and -g.

The hello plugin reads the Host header and sets two response headers: one HandleEvent and
three Steps per request. Each target gets a warm-up run, then ``--rounds`` rounds of
``wrk -t2 -c16 -d5s`` that alternate between the targets; the table shows medians. Besides
req/s and p99 it shows the plugin server's CPU time per request (the server process and its
children, from /proc): on a shared or busy machine that ratio moves much less than req/s.

    .venv/bin/python bench/gateway.py [--rounds 3] [--duration 5] [--only kongish]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kongish_pdk.testing import ServerError, start_server
from tests.e2e.minikong import (
    INSTALL_HINT,
    Gateway,
    Plugin,
    PluginServer,
    missing_prerequisites,
    nginx_binary,
    routes_config,
)
from tests.support import incumbent
from tests.support.procstat import tree_cpu_seconds

HELLO = ROOT / "plugins" / "py-hello.py"
INCUMBENT_HELLO = ROOT / "bench" / "incumbent_plugins" / "py-hello.py"
PATH = "/hello"
OUR_MODES = {"threads": [], "gevent": ["-g"], "processes": ["-m"]}
INCUMBENT_MODES = {"threads": [], "gevent": ["-g"]}


@dataclass
class Target:
    name: str
    gateway: Gateway
    expect_plugin: bool
    server_pid: int | None = None  # the plugin server (its child processes count too)
    rps: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)  # server CPU per request
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- wrk


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, duration: float, threads: int,
            connections: int) -> tuple[float, float, int, str]:
    """req/s, p99 in ms, requests, and any error wrk reported (non-2xx, socket errors)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert p99 is not None, out
    problems = [line.strip() for line in out.splitlines()
                if "Non-2xx" in line or "Socket errors" in line]
    return rps, float(p99.group(1)) * _UNITS[p99.group(2)], total, "; ".join(problems)


# ---------------------------------------------------------------------------- targets


def one_plugin_dir(root: Path, plugin: Path) -> Path:
    directory = root / f"plugins-{plugin.parent.name}"
    directory.mkdir()
    (directory / plugin.name).symlink_to(plugin)
    return directory


@contextmanager
def kongish(root: Path, mode: str,
            protocol: str = "msgpack") -> Iterator[tuple[PluginServer, int] | None]:
    prefix = root / f"kongish-{mode}-{protocol}"
    prefix.mkdir()
    plugins = one_plugin_dir(prefix, HELLO)
    try:
        server = start_server(plugins, *OUR_MODES[mode], "--socket-mode", "0666",
                              "--protocol", protocol, prefix=str(prefix))
    except ServerError as exc:
        print(f"  kongish {mode}: not available in this checkout ({str(exc).splitlines()[0]})")
        yield None
        return
    # the dump names the protocol, and mini-Kong speaks what the dump says, as Kong does
    query = f"{sys.executable} -m kongish_pdk.cli -d {plugins} --protocol {protocol} " \
            "--dump-all-plugins"
    try:
        yield PluginServer(f"kongish-{mode}-{protocol}", server.socket_path, query), server.pid
    finally:
        server.stop()


@contextmanager
def kong_pdk(root: Path, mode: str) -> Iterator[tuple[PluginServer, int] | None]:
    venv = incumbent.kong_pdk_venv()
    prefix = root / f"kong-pdk-{mode}"
    prefix.mkdir()
    plugins = one_plugin_dir(prefix, INCUMBENT_HELLO)
    # kong-pdk has no socket-mode option: a umask of 0 lets nginx's workers (nobody) connect
    proc = incumbent.start(plugins, prefix, mode, umask=0)
    try:
        server = incumbent.server_command(venv, plugins, prefix)[0]
        query = f"{server} -d {plugins} --dump-all-plugins"
        yield (PluginServer(f"kong-pdk-{mode}", str(incumbent.socket_path(prefix)), query),
               proc.pid)
    finally:
        incumbent.stop(proc)


def start_gateway(root: Path, name: str, server: PluginServer | None) -> Gateway:
    plugins = [Plugin("py-hello", {"message": "bench"})] if server else []
    config = routes_config([server] if server else [], {PATH: plugins}, debug_headers=False)
    return Gateway(root / f"nginx-{name.replace(' ', '-')}", config).start()


def check(target: Target) -> None:
    """One request through the target: the plugin must have run (or not, for the ceiling)."""
    resp = target.gateway.get(PATH)
    ran = resp.header("x-hello-from-python") is not None
    if resp.status != 200 or ran != target.expect_plugin:
        raise SystemExit(f"{target.name}: unexpected answer {resp!r}\n"
                         f"{target.gateway.error_log()[-2000:]}")


# ---------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    missing = missing_prerequisites()
    if missing or not shutil.which("wrk"):
        print("missing: " + ", ".join(missing + ([] if shutil.which("wrk") else ["wrk"]))
              + f"\ninstall with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    root.chmod(0o755)  # nginx workers run as nobody when we are root
    with ExitStack() as stack:
        targets = build_targets(root, stack, args.only)
        for target in targets:
            check(target)
            run_wrk(target.gateway.port, args.warmup, args.threads, args.connections)
        for round_no in range(args.rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            for target in order:
                measure(target, args, round_no)
        report(targets, args)
        problems = [f"{t.name}: {line}" for t in targets for line in t.gateway.unexpected_errors()]
    if problems:
        print(f"\n{len(problems)} error lines in nginx's logs (kept in {root}):")
        print("\n".join(problems[:20]))
        return 1
    shutil.rmtree(root, ignore_errors=True)
    return 0


def measure(target: Target, args: argparse.Namespace, round_no: int) -> None:
    pid = target.server_pid
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    rps, p99, total, problems = run_wrk(target.gateway.port, args.duration, args.threads,
                                        args.connections)
    target.rps.append(rps)
    target.p99_ms.append(p99)
    if pid:
        target.server_us.append(1e6 * (tree_cpu_seconds(pid) - cpu_before) / max(total, 1))
    if problems:
        target.errors.append(problems)
    cpu = f"server {target.server_us[-1]:5.0f} us/req" if pid else ""
    print(f"  round {round_no + 1} {target.name:<22} {rps:>9.0f} req/s  "
          f"p99 {p99:7.2f} ms  {cpu} {problems}", flush=True)


def build_targets(root: Path, stack: ExitStack, only: str | None) -> list[Target]:
    plans: list[tuple[str, Callable[[], object] | None]] = [("nginx, no plugin", None)]
    plans += [(f"kongish {m}", lambda m=m: kongish(root, m)) for m in OUR_MODES]
    plans += [(f"kongish {m} ProtoBuf:1", lambda m=m: kongish(root, m, "protobuf"))
              for m in OUR_MODES]
    plans += [(f"kong-pdk {m}", lambda m=m: kong_pdk(root, m)) for m in INCUMBENT_MODES]
    targets = []
    for name, make in plans:
        if only and only not in name and make is not None:
            continue
        started = stack.enter_context(make()) if make else None  # type: ignore[call-overload]
        if make is not None and started is None:
            continue
        server, pid = started if started else (None, None)
        gateway = start_gateway(root, name, server)
        stack.callback(gateway.stop)
        targets.append(Target(name, gateway, expect_plugin=make is not None, server_pid=pid))
    return targets


def report(targets: list[Target], args: argparse.Namespace) -> None:
    by_name = {t.name: t for t in targets}
    incumbent_rps = statistics.median(by_name["kong-pdk threads"].rps) \
        if "kong-pdk threads" in by_name else None
    ceiling = statistics.median(by_name["nginx, no plugin"].rps)
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
          f"{args.rounds} rounds, medians; {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{nginx_version()}")
    print()
    incumbent_us = statistics.median(by_name["kong-pdk threads"].server_us) \
        if "kong-pdk threads" in by_name else None
    print("| target | req/s | p99 | req/s vs kong-pdk threads | share of the ceiling "
          "| server CPU per request | CPU vs kong-pdk threads |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        rps, p99 = statistics.median(t.rps), statistics.median(t.p99_ms)
        ratio = f"{rps / incumbent_rps:.1f}x" if incumbent_rps else "-"
        share = f"{100 * rps / ceiling:.0f}%"
        us = statistics.median(t.server_us) if t.server_us else None
        cpu = f"{us:.0f} us" if us else "-"
        cpu_ratio = f"{incumbent_us / us:.1f}x less" if us and incumbent_us else "-"
        flag = " (errors: " + t.errors[0] + ")" if t.errors else ""
        print(f"| {t.name} | {rps:,.0f} | {p99:.2f} ms | {ratio} | {share} | {cpu} "
              f"| {cpu_ratio} |{flag}")


def nginx_version() -> str:
    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False,
                         timeout=10)
    return out.stderr.strip().replace("nginx version: ", "")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    p.add_argument("--threads", type=int, default=2, help="wrk -t")
    p.add_argument("--connections", type=int, default=16, help="wrk -c")
    p.add_argument("--only", help="only targets whose name contains this (plus the ceiling)")
    return p.parse_args()


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"\n({time.monotonic() - started:.0f} s)")
    raise SystemExit(status)
