"""Starting the servers a bench compares, and reading their CPU time from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

from kongish_pdk.testing import ServerProcess, start_server

from support import incumbent as incumbent_server
from support.incumbent import socket_path, wait_for_socket
from support.procstat import tree_cpu_seconds

PLUGINS = BENCH / "plugins"

OURS_FLAGS = {"threads": [], "gevent": ["-g"], "processes": ["-m"]}


@dataclass
class Running:
    name: str
    socket: str
    pid: int
    _stop: list = field(default_factory=list, repr=False)

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        for stop in self._stop:
            stop()


def ours(mode: str, *flags: str) -> Running:
    server: ServerProcess = start_server(PLUGINS, *OURS_FLAGS[mode], *flags)
    return Running(f"kongish {mode}", server.socket_path, server.pid, [server.stop])


def incumbent(mode: str) -> Running:
    prefix = Path(tempfile.mkdtemp(prefix="kong-pdk-"))
    proc = incumbent_server.start(PLUGINS, prefix, mode)
    return Running(f"kong-pdk {mode}", str(socket_path(prefix)), proc.pid,
                   [lambda: incumbent_server.stop(proc)])


def floor(timeout: float = 20.0) -> Running:
    path = os.path.join(tempfile.mkdtemp(prefix="floor-"), "floor.sock")
    proc = subprocess.Popen([sys.executable, str(BENCH / "floor_server.py"), path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        # RuntimeError if it exits first or does not accept within ``timeout``
        wait_for_socket(Path(path), proc, timeout, "floor server")
    except BaseException:
        incumbent_server.stop(proc)  # by PID: SIGTERM, then SIGKILL, bounded
        raise
    return Running("floor", path, proc.pid, [lambda: incumbent_server.stop(proc)])
