"""Shared fixtures: real server processes in every concurrency mode, and Kong-like clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kongish_pdk.testing import KongClient, ServerProcess, start_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "plugins"  # the example plugins users copy
TEST_PLUGINS = ROOT / "tests" / "plugins"  # plugins that misbehave on purpose

# Command-line flags of each concurrency mode; the protocol suite runs in all of them.
MODE_FLAGS: dict[str, list[str]] = {
    "threads": [],
    "gevent": ["-g"],
    "processes": ["-m", "--workers", "2"],
}


@pytest.fixture(scope="module", params=sorted(MODE_FLAGS))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _starter(base: Path) -> tuple[Callable[..., ServerProcess], list[ServerProcess]]:
    started: list[ServerProcess] = []

    def run(plugins_dir: Path = TEST_PLUGINS, *flags: str, mode: str = "threads",
            **kw: object) -> ServerProcess:
        prefix = kw.pop("prefix", None)
        if prefix is None:
            prefix = base / f"prefix{len(started)}"
            prefix.mkdir()
        server = start_server(plugins_dir, *MODE_FLAGS[mode], *flags, prefix=str(prefix), **kw)
        started.append(server)
        return server

    return run, started


def _stop_all(servers: list[ServerProcess]) -> None:
    """Stop every server, even when one stop() fails; then raise the first failure."""
    first: BaseException | None = None
    for server in servers:
        try:
            server.stop()
        except BaseException as error:  # the others must still be stopped
            first = first or error
    if first is not None:
        raise first


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers (``start(plugins_dir, *flags, mode=...)``); all stopped by PID at the end."""
    run, started = _starter(tmp_path)
    yield run
    _stop_all(started)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[ServerProcess]:
    """One server with the test plugins per module and concurrency mode (tests use their own
    instances, so they do not see each other)."""
    run, started = _starter(tmp_path_factory.mktemp(f"server-{mode}"))
    yield run(TEST_PLUGINS, "--event-timeout", "3", mode=mode)
    _stop_all(started)


@pytest.fixture
def kong(server: ServerProcess) -> Iterator[KongClient]:
    client = KongClient(server.socket_path)
    client.warm(3)  # so consecutive calls of one event use different connections
    yield client
    client.close()
