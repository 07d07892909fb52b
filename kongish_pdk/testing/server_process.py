"""Start a real plugin server process for a test, wait until it listens, stop it by PID.

Readiness is the server's own "serving ... on <socket>" log line, read from its stderr as it
arrives, so tests never sleep to wait for start-up. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

READY = re.compile(r"serving .* on (?P<path>/[^\s\"]+)")  # text or JSON log lines


class ServerError(RuntimeError):
    """The server did not start, or did not stop in time; the message carries its stderr."""


class ServerProcess:
    """A running ``kongish-pluginserver`` (or single-file plugin server)."""

    def __init__(self, command: Sequence[str], prefix: str, env: dict[str, str] | None = None,
                 start_timeout: float = 20.0) -> None:
        self.command = list(command)
        self.prefix = prefix
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._read_lock = threading.Lock()
        self._partial = b""
        self._stderr_closed = False
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, text=True, encoding="utf-8", errors="replace",
        )
        self.stdout = ""
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        try:
            for reader in self._readers:
                reader.start()
            match = self.wait_for(READY, start_timeout)
            self.socket_path = match.group("path")
        except BaseException:
            self._kill(start_timeout)  # a failed start leaks nothing
            raise

    def _kill(self, timeout: float) -> None:
        """SIGKILL by PID unless it exited, reap it and join the readers; each wait bounded."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        for reader in self._readers:
            if reader.is_alive():  # a reader that never started has nothing to join
                reader.join(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stderr(self) -> None:
        # Raw, non-blocking reads under a lock, so sync_log() can drain the pipe itself.
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        while not self._stderr_closed:
            select.select([fd], [], [], 0.5)
            with self._read_lock:
                self._drain(fd)
        with self._changed:
            self._changed.notify_all()

    def _drain(self, fd: int) -> None:
        """Move every byte now in the stderr pipe into ``lines`` (caller holds _read_lock)."""
        while not self._stderr_closed:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                self._stderr_closed = True
                data = b"\n" if self._partial else b""
            self._partial += data
            *complete, self._partial = self._partial.split(b"\n")
            if complete:
                with self._changed:
                    self.lines.extend(c.decode("utf-8", "replace") for c in complete)
                    self._changed.notify_all()

    def sync_log(self) -> None:
        """Make ``lines`` hold everything the server wrote to stderr before this call.

        The server logs a handler failure before it answers the request, so after reading
        the answer a test calls this instead of waiting for the line to show up.
        """
        assert self.proc.stderr is not None
        with self._read_lock:
            self._drain(self.proc.stderr.fileno())

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    @property
    def log(self) -> str:
        """Everything the server wrote to stderr so far (including the last instant)."""
        self.sync_log()
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0,
                 start: int = 0) -> re.Match[str]:
        """The first stderr line (from index ``start``) matching ``pattern``; waits for it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines[start:] if (m := regex.search(line))), None)

        return self._wait_until(found, f"a log line matching {regex.pattern!r}", timeout)

    def wait_for_count(self, pattern: str, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` stderr lines match ``pattern``."""
        regex = re.compile(pattern)

        def enough() -> bool | None:
            return sum(1 for line in self.lines if regex.search(line)) >= count or None

        self._wait_until(enough, f"{count} log lines matching {pattern!r}", timeout)

    def _wait_until(self, check: Callable[[], _T | None], what: str, timeout: float) -> _T:
        """Re-check whenever a log line arrives; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = check()
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    raise ServerError(f"server exited ({self.proc.returncode}) before "
                                      f"{what}:\n{self.log_unlocked()}")
                if left <= 0:
                    raise ServerError(f"no {what} within {timeout}s:\n{self.log_unlocked()}")
                self._changed.wait(min(left, 0.5))

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        self.sync_log()
        with self._changed:
            return sum(1 for line in self.lines if regex.search(line))

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServerError(f"server {self.pid} still running after {timeout}s:\n"
                              f"{self.log}") from None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds; its exit status.
        ServerError if it is still running even after the SIGKILL."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self._kill(timeout)
        if self.proc.returncode is None:
            raise ServerError(f"server {self.pid} still running after SIGKILL and {timeout}s")
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(plugins_dir: str | os.PathLike[str], *args: str, prefix: str | None = None,
                 python: str = sys.executable, **kw: Any) -> ServerProcess:
    """``kongish-pluginserver -d plugins_dir -p prefix args...`` in a new process."""
    prefix = prefix or tempfile.mkdtemp(prefix="kongish-")
    command = [python, "-m", "kongish_pdk.cli", "-d", str(Path(plugins_dir)), "-p", prefix, *args]
    return ServerProcess(command, prefix, **kw)
