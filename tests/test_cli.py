"""The command line Kong's kong.conf points at: dumps, flags, the single-file server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kongish_pdk import __version__
from kongish_pdk.testing import KongClient, ServerProcess

from conftest import EXAMPLES, TEST_PLUGINS

PY = sys.executable
SERVER = [PY, "-m", "kongish_pdk.cli"]


def run(*args: str, env: dict[str, str] | None = None, cwd: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def only_json(stdout: str) -> dict:
    """stdout must be exactly one JSON document (what Kong's cjson.decode gets)."""
    decoded, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", f"bytes after the JSON document: {stdout[end:]!r}"
    assert stdout.lstrip() == stdout, "bytes before the JSON document"
    return decoded


# ---------------------------------------------------------------- dumps


def test_dump_all_plugins_is_one_json_document_in_kongs_shape() -> None:
    done = run(*SERVER, "-d", str(EXAMPLES), "--dump-all-plugins", "-v")  # -v logs to stderr
    assert done.returncode == 0, done.stderr
    doc = only_json(done.stdout)
    assert doc["Protocol"] == "MsgPack:1"
    names = [p["Name"] for p in doc["Plugins"]]
    assert names == sorted(names) and "py-hello" in names and "py-key-auth" in names
    hello = next(p for p in doc["Plugins"] if p["Name"] == "py-hello")
    assert hello == {
        "Name": "py-hello", "Phases": ["access"], "Priority": 100, "Version": "0.1.0",
        "Schema": {"name": "py-hello", "fields": [{"config": {"type": "record", "fields": [
            {"message": {"type": "string", "default": "hello"}}]}}]},
    }


@pytest.mark.parametrize("flag", ["--dump", "-dump", "--dump-all-plugins"])
def test_every_dump_spelling_works(flag: str) -> None:
    done = run(*SERVER, "-d", str(EXAMPLES), flag)
    assert done.returncode == 0 and only_json(done.stdout)["Plugins"]


def test_dump_plugin_info_prints_one_plugin_for_kong_39() -> None:
    done = run(*SERVER, "-d", str(EXAMPLES), "--dump-plugin-info", "py-key-auth")
    assert done.returncode == 0, done.stderr
    doc = only_json(done.stdout)
    assert [p["Name"] for p in doc["Plugins"]] == ["py-key-auth"]
    missing = run(*SERVER, "-d", str(EXAMPLES), "--dump-plugin-info", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no plugin named 'nope'" in missing.stderr and "py-hello" in missing.stderr


def test_single_file_dump_works_in_an_empty_environment(tmp_path: Path) -> None:
    # Kong's nginx workers scrub the environment: no PATH, no PYTHONPATH, no venv variables.
    # (The package must be importable by this interpreter, as it is from a venv install.)
    done = run(os.path.abspath(PY), str(EXAMPLES / "py-hello.py"), "-dump", env={},
               cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert only_json(done.stdout)["Plugins"][0]["Name"] == "py-hello"


def test_prints_at_import_time_never_reach_stdout(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        "print('hello from import time')\n"
        "import sys; sys.stdout.write('more noise')\n"
        "import os; os.write(1, b'even at the fd level')\n"
        "version = '1.0'\nclass Plugin:\n    def access(self, kong): pass\n")
    done = run(*SERVER, "-d", str(tmp_path), "--dump")
    assert done.returncode == 0
    assert only_json(done.stdout)["Plugins"][0]["Name"] == "chatty"
    assert "hello from import time" in done.stderr and "even at the fd level" in done.stderr


@pytest.mark.parametrize(("files", "message"), [
    ({"broken.py": "import nonexistent_module_xyz\n"}, "No module named 'nonexistent_module_xyz'"),
    ({"bad_version.py": "version = '1.2.3.4'\nclass Plugin:\n    def access(self, k): pass\n"},
     "at most three numeric parts"),
    ({"bad_priority.py": "version='1'\npriority='high'\nclass Plugin:\n"
                         "    def access(self, k): pass\n"}, "priority must be an integer"),
    ({"bad_schema.py": "version='1'\nSchema=({'x': {'type': 'text'}},)\nclass Plugin:\n"
                       "    def access(self, k): pass\n"}, "unknown type 'text'"),
    ({"no_phase.py": "version='1'\nclass Plugin:\n    def header_filter(self, k): pass\n"},
     "defines none of the phases"),
])
def test_any_bad_plugin_makes_the_dump_fail_clearly(tmp_path: Path, files: dict[str, str],
                                                    message: str) -> None:
    (tmp_path / "good.py").write_text("version='1.0.0'\nclass Plugin:\n"
                                      "    def access(self, k): pass\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = run(*SERVER, "-d", str(tmp_path), "--dump")
    assert done.returncode == 1
    assert done.stdout == ""  # never half a document
    assert message in done.stderr and next(iter(files)) in done.stderr


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    done = run(*SERVER, "-d", str(tmp_path / "nope"), "--dump")
    assert done.returncode == 1 and done.stdout == ""
    assert "does not exist" in done.stderr


def test_dump_never_imports_gevent_or_binds_a_socket(tmp_path: Path) -> None:
    done = run(PY, "-X", "importtime", "-m", "kongish_pdk.cli", "-d", str(EXAMPLES), "--dump",
               "-g", "-p", str(tmp_path / "none"))
    assert done.returncode == 0
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")]
    assert "msgpack" in imported  # the check itself works
    assert not [m for m in imported if m.startswith("gevent")]
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------- flags


def test_version_and_help() -> None:
    for flag in ("--version", "-version"):
        done = run(*SERVER, flag)
        assert done.returncode == 0 and done.stdout.strip() == f"kongish-pluginserver {__version__}"
    helptext = run(*SERVER, "-h").stdout
    for flag in ("--kong-prefix", "--socket-name", "--socket-mode", "--dump-plugin-info",
                 "--on-plugin-error", "--event-timeout", "--instance-idle-timeout",
                 "--log-format", "--threads", "--workers", "--lua-style", "--no-lua-style",
                 "--listen-queue-size", "--gevent", "--multiprocessing", "--start-method",
                 "--cpu-affinity", "--worker-nice"):
        assert flag in helptext, flag


def test_kong_pdk_command_lines_are_accepted(start, tmp_path: Path) -> None:
    # Copied from kong.conf files written for kong-pdk 0.36.
    server = start(TEST_PLUGINS, "-kong-prefix", str(tmp_path), "--no-lua-style",
                   "--listen-queue-size", "128", "-v", "--socket-name", "python_pluginserver.sock")
    assert server.socket_path == str(tmp_path / "python_pluginserver.sock")


def test_gevent_and_processes_flags_exclude_each_other() -> None:
    done = run(*SERVER, "-d", str(TEST_PLUGINS), "-g", "-m")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


@pytest.mark.parametrize(("value", "why"), [("-1", "never above it"), ("20", "out of range"),
                                             ("x", "not a whole number")])
def test_worker_nice_outside_0_to_19_is_refused(value: str, why: str) -> None:
    done = run(*SERVER, "-d", str(TEST_PLUGINS), "-m", "--worker-nice", value)
    assert done.returncode == 2 and why in done.stderr and "--worker-nice" in done.stderr


def test_single_file_server_defaults_to_kongs_socket_name(tmp_path: Path) -> None:
    with ServerProcess([PY, str(EXAMPLES / "py-hello.py"), "-kong-prefix", str(tmp_path)],
                       str(tmp_path)) as server:
        assert server.socket_path == str(tmp_path / "py-hello.socket")
        with KongClient(server.socket_path) as kong:
            iid = kong.start_instance("py-hello", {"message": "hi"})
            trace = kong.run_event(iid, "access", lambda m, a: "kong.example")
            assert trace.calls[1] == ("kong.response.set_header",
                                      ["x-hello-from-python", "Python says hi to kong.example"])


def test_json_logs_are_one_object_per_line(start) -> None:
    server = start(TEST_PLUGINS, "--log-format", "json")
    with KongClient(server.socket_path) as kong:
        kong.handle_event(kong.start_instance("raiser"), "access")
    server.wait_for(r'"level": "ERROR"')
    entries = [json.loads(line) for line in server.lines]
    failure = next(e for e in entries if e["level"] == "ERROR")
    assert "plugin 'raiser' phase 'access'" in failure["message"]
    assert "Traceback" in failure["message"]
    assert all(e["time"].endswith("Z") for e in entries)  # UTC


def test_lua_style_returns_value_and_error_tuples(start) -> None:
    server = start(TEST_PLUGINS, "--lua-style")
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("echo")
        trace = kong.run_event(iid, "access", lambda m, a: "v")
        # kong-pdk style: get_header returned ("v", None), and the plugin passed it on.
        assert trace.calls[1] == ("kong.response.set_header", ["x-out", ["v", None]])
