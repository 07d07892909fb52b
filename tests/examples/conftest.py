"""Example plugins' tests: each runs in-process and through a real server (kong_mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@pytest.fixture
def plugins() -> Path:
    return PLUGINS
