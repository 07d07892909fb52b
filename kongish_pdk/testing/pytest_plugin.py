"""pytest fixtures for plugin authors (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kongish_pdk.testing.server_process import ServerProcess, start_server


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
