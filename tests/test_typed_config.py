"""Typed config: the Kong schema is derived from a dataclass/TypedDict, configs are validated."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pytest

from kongish_pdk.config import Attrs, Between, ConfigError, Length
from kongish_pdk.errors import PluginLoadError
from kongish_pdk.plugin.schema import to_kong_schema
from kongish_pdk.plugin.spec import build_spec
from kongish_pdk.plugin.typed_config import TypedConfigError, converter, kong_fields
from kongish_pdk.testing import ConfigRejected, Kit, Request

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).parent / "kit_plugins"


@dataclass
class Inner:
    size: Annotated[int, Between(1, 10)] = 5


@dataclass
class Everything:
    name: Annotated[str, Length(min=2, max=8)]
    secret: Annotated[str, Attrs(referenceable=True, encrypted=True)] | None = None
    on: bool = True
    count: int = 3
    ratio: float = 0.25
    mode: Literal["a", "b"] = "a"
    codes: list[int] = field(default_factory=lambda: [200])
    unique: set[str] = field(default_factory=set)
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


class TD(TypedDict, total=False):
    url: str
    retries: int


def test_schema_covers_every_kind_of_field() -> None:
    fields = dict(next(iter(f.items())) for f in kong_fields(Everything))
    assert fields["name"] == {"type": "string", "required": True, "len_min": 2, "len_max": 8}
    assert fields["secret"] == {"type": "string", "referenceable": True, "encrypted": True}
    assert fields["on"] == {"type": "boolean", "required": True, "default": True}
    assert fields["count"] == {"type": "integer", "required": True, "default": 3}
    assert fields["ratio"] == {"type": "number", "required": True, "default": 0.25}
    assert fields["mode"] == {"type": "string", "one_of": ["a", "b"], "required": True,
                              "default": "a"}
    assert fields["codes"] == {"type": "array", "elements": {"type": "integer"},
                               "required": True, "default": [200]}
    assert fields["unique"]["type"] == "set"
    assert fields["weights"] == {"type": "map", "keys": {"type": "string"},
                                 "values": {"type": "number"}, "required": True, "default": {}}
    assert fields["inner"] == {"type": "record", "required": True, "default": {"size": 5},
                               "fields": [{"size": {"type": "integer", "required": True,
                                                    "default": 5, "between": [1, 10]}}]}
    assert fields["maybe"] == {"type": "integer"}
    # and Kong's metaschema rules, as the dump checks them
    to_kong_schema("everything", kong_fields(Everything))


def test_config_is_validated_and_built() -> None:
    make = converter(Everything)
    config = make({"name": "abc", "codes": [201, 202], "inner": {"size": 7}, "ratio": 1,
                   "weights": [], "maybe": None})
    assert isinstance(config, Everything) and isinstance(config.inner, Inner)
    assert config.codes == [201, 202] and config.inner.size == 7
    assert config.ratio == 1.0 and isinstance(config.ratio, float)
    assert config.weights == {}  # an empty Lua table arrives as []
    assert config.on is True  # defaults fill what Kong did not send
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "config.name: required field missing"),
        ({"name": "x"}, "config.name: length must be at least 2"),
        ({"name": "abc", "count": "3"}, "config.count: expected an integer, got '3'"),
        ({"name": "abc", "on": 1}, "config.on: expected a boolean"),
        ({"name": "abc", "mode": "c"}, "config.mode: expected one of 'a', 'b'"),
        ({"name": "abc", "inner": {"size": 11}}, "config.inner.size: 11 is not between 1 and 10"),
        ({"name": "abc", "codes": [1, "x"]}, r"config.codes\[1\]: expected an integer"),
        ({"name": "abc", "extra": 1}, "config.extra: unknown field"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message):
            make(raw)


def test_typeddict_config() -> None:
    assert kong_fields(TD) == [{"url": {"type": "string"}}, {"retries": {"type": "integer"}}]
    assert converter(TD)({"url": "http://x", "retries": None}) == {"url": "http://x",
                                                                   "retries": None}


def test_typed_config_plugs_into_the_spec() -> None:
    class Plugin:
        def __init__(self, config: Everything) -> None:
            self.config = config

        def access(self, kong: Any) -> None: ...

    spec = build_spec("p", cls=Plugin, version="1.0", priority=1, schema=None, source="p.py")
    record = spec.schema["fields"][0]["config"]
    assert record["type"] == "record" and len(record["fields"]) == 11
    assert isinstance(spec.make_config({"name": "abc"}), Everything)
    with pytest.raises(PluginLoadError, match="declares both Schema and a typed config"):
        build_spec("p", cls=Plugin, version="1.0", priority=1, schema=[], source="p.py")


def test_unsupported_types_are_refused_at_load_time() -> None:
    @dataclass
    class Bad:
        anything: Any = None

    with pytest.raises(TypedConfigError, match="anything: Any has no Kong schema type"):
        kong_fields(Bad)


@pytest.mark.parametrize("kong_mode", ["local", "wire"])
def test_typed_plugin_in_both_modes(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "typed.py", {"header": "x-t", "tags": ["a", "b"],
                                                    "limits": {"per_minute": 9}})
    result = plugin.run(Request())
    assert result.response.header("x-t") == "strict/9/0.5/a,b/Limits"
    with pytest.raises(ConfigRejected, match=r"config\.limits\.per_minute: 0 is not between"):
        plugin_kit.load(PLUGINS / "typed.py", {"header": "x", "limits": {"per_minute": 0}})
    with pytest.raises(ConfigRejected, match=r"config\.header: required field missing"):
        plugin_kit.load(PLUGINS / "typed.py", {})


def test_dump_of_a_typed_example_is_what_kong_expects() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kongish_pdk.cli", "-d", str(ROOT / "plugins"),
         "--dump-plugin-info", "py-request-transform"],
        capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(done.stdout)["Plugins"][0]
    config = info["Schema"]["fields"][0]["config"]
    assert info["Schema"]["name"] == "py-request-transform"
    assert config["type"] == "record"
    names = [next(iter(f)) for f in config["fields"]]
    assert names == ["add_headers", "remove_headers", "add_query", "strip_prefix", "new_prefix"]
    assert config["fields"][3]["strip_prefix"] == {"type": "string", "len_min": 1}
