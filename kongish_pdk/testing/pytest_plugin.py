"""pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

* ``plugin_kit``: a :class:`~kongish_pdk.testing.Kit` in the current ``kong_mode``; every
  instance is closed after the test.
* ``kong_mode``: ``"local"`` (in-process) or ``"wire"`` (a real server, the real protocol).
  Choose per test with ``@pytest.mark.parametrize("kong_mode", ["local", "wire"])``, or for
  the whole run with ``pytest --kong-mode=wire`` (or ``both``).
* ``plugin_server``: start real plugin servers, stopped at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kongish_pdk.testing.kit import MODES, Kit, Mode, ServerPool
from kongish_pdk.testing.server_process import ServerProcess, start_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kong-mode", choices=("local", "wire", "both"), default="local",
        help="kongish-pdk plugin tests: run plugin_kit tests in-process (local), through a "
             "real plugin server over the real protocol (wire), or both (default local)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kong_mode" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else ""
        if "kong_mode" in (names.replace(" ", "").split(",") if isinstance(names, str)
                           else list(names)):
            return  # the test chose its modes itself
    option = metafunc.config.getoption("--kong-mode")
    modes = list(MODES) if option == "both" else [option]
    metafunc.parametrize("kong_mode", modes)


@pytest.fixture(scope="session")
def kongish_servers() -> Iterator[ServerPool]:
    """Real plugin servers shared by the session's wire-mode tests (one per plugin folder)."""
    pool = ServerPool()
    yield pool
    pool.close()


@pytest.fixture
def plugin_kit(kong_mode: Mode, kongish_servers: ServerPool) -> Iterator[Kit]:
    """Load plugins with ``plugin_kit.load("plugins/my-plugin.py", {"option": 1})``."""
    with Kit(kong_mode, servers=kongish_servers) as kit:
        yield kit


@pytest.fixture
def plugin_server(tmp_path: Any) -> Iterator[Callable[..., ServerProcess]]:
    """Start real plugin servers: ``plugin_server("plugins/", "-g")``; all stopped at the end."""
    started: list[ServerProcess] = []

    def start(plugins_dir: str, *args: str, **kw: Any) -> ServerProcess:
        server = start_server(plugins_dir, *args, prefix=kw.pop("prefix", str(tmp_path)), **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
