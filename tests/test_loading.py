"""Finding plugins in a directory, validating them like Kong, turning Schema into Kong's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kongish_pdk.plugin.schema import SchemaError, to_kong_schema

PLUGIN = "version = '1.0.0'\nclass Plugin:\n    def access(self, kong):\n        pass\n"


def dump(directory: Path) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter per case: imports must not leak between tests.
    return subprocess.run([sys.executable, "-m", "kongish_pdk.cli", "-d", str(directory),
                           "--dump"], capture_output=True, text=True, timeout=60)


def names(directory: Path) -> list[str]:
    done = dump(directory)
    assert done.returncode == 0, done.stderr
    return [p["Name"] for p in json.loads(done.stdout)["Plugins"]]


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def test_files_and_packages_sorted_private_and_other_files_skipped(tmp_path: Path) -> None:
    write(tmp_path, {
        "zeta.py": PLUGIN, "alpha.py": PLUGIN, "_private.py": PLUGIN, ".hidden.py": PLUGIN,
        "notes.txt": "x", "pkg/__init__.py": "from .impl import Plugin\nversion = '2.0'\n",
        "pkg/impl.py": "class Plugin:\n    def log(self, kong):\n        pass\n",
        "not_a_package/impl.py": PLUGIN,
    })
    assert names(tmp_path) == ["alpha", "pkg", "zeta"]


def test_helpers_import_in_any_order_and_run_once(tmp_path: Path) -> None:
    marker = tmp_path / "imports.log"
    write(tmp_path, {
        # "aaa" sorts before the helper it needs: kong-pdk 0.36 drops both in that case.
        "aaa.py": "import zzz_helpers\nversion = zzz_helpers.VERSION\n" + PLUGIN.split("\n", 1)[1],
        "zzz_helpers.py": f"VERSION = '3.1.4'\nopen({str(marker)!r}, 'a').write('x')\n",
    })
    done = dump(tmp_path)
    assert done.returncode == 0, done.stderr
    plugins = json.loads(done.stdout)["Plugins"]
    assert [(p["Name"], p["Version"]) for p in plugins] == [("aaa", "3.1.4")]
    assert marker.read_text() == "x"  # the helper module ran once


def test_no_plugin_file_shadows_the_standard_library_or_installed_packages(
        tmp_path: Path) -> None:
    write(tmp_path, {
        "json.py": PLUGIN,  # a plugin that happens to be called "json"
        "msgpack.py": PLUGIN,
        "user.py": "import json, msgpack\n"
                   "assert json.dumps is not None and msgpack.packb is not None\n" + PLUGIN,
    })
    assert names(tmp_path) == ["json", "msgpack", "user"]


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"dup.py": PLUGIN, "dup/__init__.py": PLUGIN})
    done = dump(tmp_path)
    assert done.returncode == 1 and "are named 'dup'" in done.stderr


def test_phases_kong_cannot_drive_are_warned_about(tmp_path: Path) -> None:
    write(tmp_path, {"filters.py": PLUGIN + "    def header_filter(self, kong):\n        pass\n"})
    done = dump(tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["Plugins"][0]["Phases"] == ["access"]
    assert "Plugin.header_filter will never run" in done.stderr


# ---------------------------------------------------------------- schema


def test_kong_pdk_schema_list_becomes_the_config_record() -> None:
    schema = to_kong_schema("p", ({"a": {"type": "array", "elements": {"type": "string"},
                                         "default": ("x", "y")}},))
    assert schema == {"name": "p", "fields": [{"config": {"type": "record", "fields": [
        {"a": {"type": "array", "elements": {"type": "string"}, "default": ["x", "y"]}}]}}]}


def test_full_sub_schema_passes_through_with_extra_fields() -> None:
    full = {"name": "p", "fields": [
        {"protocols": {"type": "set", "elements": {"type": "string", "one_of": ["http"]}}},
        {"config": {"type": "record", "fields": [{"n": {"type": "integer", "between": [1, 9]}}]}},
    ]}
    assert to_kong_schema("p", full) == full


@pytest.mark.parametrize(("schema", "message"), [
    ({"name": "other", "fields": []}, "differs from the plugin name"),
    ({"name": "p", "fields": [{"config": {"type": "string"}}]}, "'config' field of type 'record'"),
    (({"a": {"type": "array"}},), "config.a: a array field needs 'elements'"),
    (({"m": {"type": "map", "keys": {"type": "string"}}},), "config.m: a map field needs 'values'"),
    (({"r": {"type": "record", "fields": [{"deep": {"type": "nope"}}]}},),
     "config.r.deep: unknown type 'nope'"),
    (({"a": {"type": "string"}, "b": {"type": "string"}},), "exactly one key"),
    (({"f": {"type": "string", "default": print}},), "cannot be written as JSON"),
    ("message", "must be a list"),
])
def test_schemas_kong_would_refuse_are_refused_with_a_path(schema: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        to_kong_schema("p", schema)
