"""A plugin written against kongish_pdk.pdk type-checks with mypy --strict; a typo does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "py-request-transform.py"  # the typed-config example


def mypy_strict(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    # MYPYPATH: an editable install is found by an import hook mypy does not follow.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--no-error-summary", str(path)],
        capture_output=True, text=True, timeout=240, env=env, check=False, cwd=path.parent)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_example_plugin_passes_mypy_strict(tmp_path: Path, cache: Path) -> None:
    plugin = tmp_path / "request_transform.py"
    plugin.write_text(EXAMPLE.read_text())
    done = mypy_strict(plugin, cache)
    assert done.returncode == 0, done.stdout + done.stderr


def test_typo_in_a_pdk_call_fails_mypy(tmp_path: Path, cache: Path) -> None:
    source = EXAMPLE.read_text()
    assert "kong.request.get_query()" in source
    plugin = tmp_path / "request_transform_typo.py"
    plugin.write_text(source.replace("kong.request.get_query()", "kong.request.get_querry()"))
    done = mypy_strict(plugin, cache)
    assert done.returncode == 1
    assert '"KongRequest" has no attribute "get_querry"' in done.stdout


def test_wrong_value_types_fail_mypy(tmp_path: Path, cache: Path) -> None:
    plugin = tmp_path / "wrong_types.py"
    plugin.write_text(
        "from kongish_pdk.pdk import Kong\n\n\n"
        "def access(kong: Kong) -> None:\n"
        "    body: str = kong.request.get_raw_body()\n"  # bytes | None, not str
        "    first: str = kong.request.get_headers()['a']\n"  # list[str], not str
    )
    done = mypy_strict(plugin, cache)
    assert done.returncode == 1
    assert 'expression has type "bytes | None"' in done.stdout
    assert 'expression has type "list[str]"' in done.stdout
