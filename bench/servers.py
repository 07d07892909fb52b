"""Starting the servers a bench compares, and reading their CPU time from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

from kongish_pdk.testing import ServerProcess, start_server

from support.incumbent import kong_pdk_venv, server_command, socket_path, wait_for_socket
from support.procstat import process_tree

PLUGINS = BENCH / "plugins"
TICK = os.sysconf("SC_CLK_TCK")

OURS_FLAGS = {"threads": [], "gevent": ["-g"], "processes": ["-m"]}
INCUMBENT_FLAGS = {"threads": [], "gevent": ["-g"], "processes": ["-m"]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after the comm field)
    return total / TICK


@dataclass
class Running:
    name: str
    socket: str
    pid: int
    _stop: list = field(default_factory=list, repr=False)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        for stop in self._stop:
            stop()


def ours(mode: str, *flags: str) -> Running:
    server: ServerProcess = start_server(PLUGINS, *OURS_FLAGS[mode], *flags)
    return Running(f"kongish {mode}", server.socket_path, server.pid, [server.stop])


def incumbent(mode: str) -> Running:
    venv = kong_pdk_venv()
    prefix = Path(tempfile.mkdtemp(prefix="kong-pdk-"))
    proc = subprocess.Popen(server_command(venv, PLUGINS, prefix, *INCUMBENT_FLAGS[mode]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    wait_for_socket(socket_path(prefix), proc)
    return Running(f"kong-pdk {mode}", str(socket_path(prefix)), proc.pid,
                   [lambda: _stop_process(proc)])


def floor() -> Running:
    path = os.path.join(tempfile.mkdtemp(prefix="floor-"), "floor.sock")
    proc = subprocess.Popen([sys.executable, str(BENCH / "floor_server.py"), path],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "listening" in proc.stdout.readline()
    return Running("floor", path, proc.pid, [lambda: _stop_process(proc)])


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    tree = process_tree(proc.pid)  # kong-pdk's -m pool children outlive a SIGTERM'd parent
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
