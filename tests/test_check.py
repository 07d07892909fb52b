"""``kongish-pluginserver check``: the plugin as Kong sees it, and the mistakes it lints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SLOPPY = '''
try:
    import psycopg2
except ImportError:
    psycopg2 = None

version = "1.0.0"


class Plugin:
    def __init__(self, config):
        self.config = config

    def acess(self, kong):
        pass

    async def rewrite(self, kong):
        kong.log.info("never runs")

    def access(self, kong):
        kong.request.get_heade("host")
        kong.response.get_status()
        kong.raw_call("kong.enterprise.thing")

    def header_filter(self, kong):
        pass

    def log(self, kong):
        kong.client.get_ip()
'''


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kongish_pdk.cli", "check", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_examples_are_clean_and_shown_as_kong_sees_them() -> None:
    done = check(str(ROOT / "plugins"), "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 plugin(s), 0 error(s), 0 warning(s)" in done.stdout
    dump_line = next(line for line in done.stdout.splitlines()
                     if line.strip().startswith("dump:") and "py-hello" in line)
    dumped = subprocess.run(
        [sys.executable, "-m", "kongish_pdk.cli", "-d", str(ROOT / "plugins"),
         "--dump-plugin-info", "py-hello"], capture_output=True, text=True, timeout=60,
        check=True).stdout
    assert json.loads(dump_line.split("dump: ", 1)[1]) == json.loads(dumped)


def test_lints_common_mistakes(tmp_path: Path) -> None:
    (tmp_path / "sloppy.py").write_text(SLOPPY)
    done = check(str(tmp_path), "--gevent", "--json")
    assert done.returncode == 1
    (report,) = json.loads(done.stdout)
    messages = {f["message"]: f["level"] for f in report["findings"]}

    def level(fragment: str) -> str:
        return next(lvl for msg, lvl in messages.items() if fragment in msg)

    assert level("kong.request.get_heade is not a PDK function; did you mean "
                 "kong.request.get_header?") == "error"
    assert level("kong.response.get_status cannot be called in the access phase") == "error"
    assert level("Plugin.rewrite is `async def`") == "error"
    assert level("Plugin.acess looks like the access phase") == "warning"
    assert level("Plugin.header_filter will never run") == "warning"
    assert level("kong.client.get_ip needs the live request") == "warning"
    assert level("gevent mode: psycopg2 blocks the gevent hub") == "warning"
    assert not any("raw_call" in m or "enterprise" in m for m in messages)
    assert report["dump"]["Plugins"][0]["Phases"] == ["rewrite", "access", "log"]


def test_load_errors_are_reported_per_plugin(tmp_path: Path) -> None:
    (tmp_path / "bad_version.py").write_text(
        "version = '1.2.3.4'\nclass Plugin:\n    def access(self, kong): pass\n")
    (tmp_path / "good.py").write_text(
        "version = '1.0'\nclass Plugin:\n    def __init__(self, c): pass\n"
        "    def access(self, kong): pass\n")
    (tmp_path / "helper.py").write_text("X = 1\n")  # no Plugin: not reported
    done = check(str(tmp_path))
    assert done.returncode == 1
    assert "at most three numeric parts" in done.stdout
    assert "good  (" in done.stdout and "helper" not in done.stdout
    assert "2 plugin(s), 1 error(s)" in done.stdout


def test_full_subschema_with_config_not_first_is_shown(tmp_path: Path) -> None:
    # Kong's sub-schemas usually start with protocols/consumer/route fields: config can be
    # anywhere in the list.
    (tmp_path / "full.py").write_text(
        "version = '1.0'\n"
        "Schema = {'name': 'full', 'fields': [\n"
        "    {'protocols': {'type': 'set', 'elements': {'type': 'string'}}},\n"
        "    {'config': {'type': 'record', 'fields': [\n"
        "        {'message': {'type': 'string', 'default': 'hi'}}]}}]}\n"
        "class Plugin:\n    def __init__(self, c): pass\n"
        "    def access(self, kong): pass\n")
    done = check(str(tmp_path / "full.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'config.message: string {"default": "hi"}' in done.stdout


def test_a_package_importing_its_plugin_class_is_checked_where_it_is_written(
        tmp_path: Path) -> None:
    # The server serves any module that has Plugin after import, wherever it is written.
    package = tmp_path / "split"
    package.mkdir()
    (package / "__init__.py").write_text("from .handler import Plugin\n\nversion = '1.0'\n")
    (package / "handler.py").write_text(
        "class Plugin:\n    def __init__(self, c): pass\n\n"
        "    def access(self, kong):\n        kong.request.get_heade('host')\n")
    done = check(str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 plugin(s), 1 error(s)" in done.stdout
    assert str(package / "handler.py") in done.stdout
    assert "line 5: kong.request.get_heade is not a PDK function" in done.stdout
