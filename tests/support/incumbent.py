"""The incumbent, kong-pdk 0.36, installed in its own venv for side-by-side benchmarks.

Used by ``bench/`` only (no test runs kong-pdk). The venv is cached under ``.cache/`` so
repeated runs do not reinstall; it never shares packages with ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .procstat import process_tree
from .waiting import poll_until

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENT = "kong-pdk==0.36"
VENV = ROOT / ".cache" / "kong-pdk-0.36"


def kong_pdk_venv(venv: Path = VENV, timeout: float = 600.0) -> Path:
    """A venv with kong-pdk 0.36 (created on first use); returns its directory."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import kong_pdk, gevent"]
    if python.exists() and subprocess.run(probe, check=False, capture_output=True,
                                          timeout=60).returncode == 0:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                   timeout=timeout)
    subprocess.run([str(python), "-m", "pip", "install", "-q", REQUIREMENT], check=True,
                   timeout=timeout)
    return venv


def server_command(venv: Path, plugins_dir: Path, prefix: Path, *flags: str) -> list[str]:
    """kong-pdk's multi-plugin server; its socket is ``prefix/python_pluginserver.sock``."""
    return [str(venv / "bin" / "kong-python-pluginserver"), "-d", str(plugins_dir),
            "-p", str(prefix), "--no-lua-style", *flags]


def socket_path(prefix: Path) -> Path:
    return prefix / "python_pluginserver.sock"


def wait_for_socket(path: Path, proc: subprocess.Popen[Any], timeout: float = 20.0,
                    name: str = "kong-pdk") -> None:
    """Wait until ``name``'s socket accepts (kong-pdk prints no readiness line we can rely on,
    nor does a server under valgrind): RuntimeError if it exits first or does not listen in
    time."""
    def accepts() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return True
                except OSError:
                    pass
        return False

    if not poll_until(accepts, timeout, every=0.02):
        raise RuntimeError(f"{name} did not listen on {path} within {timeout}s")


MODE_FLAGS = {"threads": [], "gevent": ["-g"], "processes": ["-m"]}


class Incumbent(subprocess.Popen[bytes]):
    """kong-pdk's server; ``pool`` holds its descendants (PID, start time) once it listened."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pool: set[tuple[int, str]] = set()


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: with the PID it names one process, even after PID reuse."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[19]
    except FileNotFoundError:
        return None


def descendants(pid: int) -> set[tuple[int, str]]:
    """(PID, start time) of every live descendant of ``pid``."""
    return {(child, started) for child in process_tree(pid)[1:]
            if (started := start_time(child)) is not None}


def start(plugins_dir: Path, prefix: Path, mode: str = "threads", **popen: Any) -> Incumbent:
    """kong-pdk's server in ``mode``, listening (``popen``: extra Popen arguments)."""
    command = server_command(kong_pdk_venv(), plugins_dir, prefix, *MODE_FLAGS[mode])
    proc = Incumbent(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, **popen)
    try:
        wait_for_socket(socket_path(prefix), proc)
        proc.pool = descendants(proc.pid)  # -m's pool exists by now
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; and kill the pool children kong-pdk's -m leaves behind, even
    when the server itself already exited (they are re-parented, still running)."""
    pool = set(proc.pool) if isinstance(proc, Incumbent) else set()
    if proc.poll() is None:
        pool |= descendants(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for pid, started in pool:
        if start_time(pid) == started:  # still that process, not a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
