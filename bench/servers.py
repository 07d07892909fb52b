"""Starting the servers a bench compares, and reading their CPU time from /proc."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

from kongish_pdk.testing import ServerProcess, start_server

from support import incumbent as incumbent_server
from support.incumbent import socket_path
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
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line, deadline = b"", time.monotonic() + timeout
        while not line.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
            if select.select([proc.stdout], [], [], left)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:  # exited
                    break
                line += chunk
        if b"listening" not in line:
            raise RuntimeError(f"floor server not listening within {timeout}s "
                               f"(exit status {proc.poll()}): {line!r}")
    except BaseException:
        incumbent_server.stop(proc)  # by PID: SIGTERM, then SIGKILL, bounded
        raise
    return Running("floor", path, proc.pid, [lambda: incumbent_server.stop(proc)])
