"""Turns a plugin's ``Schema`` into the Kong plugin sub-schema the dump must carry.

Kong does no conversion: what we print is validated by its metaschema as is. So we accept the
kong-pdk form (a list of one-key field dicts, wrapped as the ``config`` record) or a complete
sub-schema dict, check it the way Kong would, and refuse it with a precise path otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Field types Kong's metaschema knows ("function" exists only for Lua plugins).
KONG_TYPES = frozenset(
    {"string", "number", "integer", "boolean", "array", "set", "map", "record", "foreign", "json"}
)


class SchemaError(ValueError):
    """The schema would be refused by Kong; the message names the offending field path."""


def to_kong_schema(plugin_name: str, schema: Any) -> dict[str, Any]:
    """The ``Schema`` value of a dump entry for this plugin."""
    if schema is None:
        schema = []
    if isinstance(schema, Mapping):
        return _full_subschema(plugin_name, schema)
    if isinstance(schema, Sequence) and not isinstance(schema, str | bytes):
        fields = _fields(schema, "config")
        return {
            "name": plugin_name,
            "fields": [{"config": {"type": "record", "fields": fields}}],
        }
    raise SchemaError(
        f"Schema must be a list of {{field: {{type: ...}}}} dicts or a Kong sub-schema dict, "
        f"not {type(schema).__name__}"
    )


def config_record(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``config`` record of a Kong sub-schema (any position in its fields), or None."""
    for entry in schema.get("fields") or []:
        if isinstance(entry, Mapping) and "config" in entry:
            record: dict[str, Any] = entry["config"]
            return record
    return None


def _full_subschema(plugin_name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    name = schema.get("name", plugin_name)
    if name != plugin_name:
        raise SchemaError(f"Schema name {name!r} differs from the plugin name {plugin_name!r}")
    fields = _fields(schema.get("fields"), "fields")
    config = config_record({"fields": fields})
    if config is None or config.get("type") != "record":
        raise SchemaError("a full sub-schema needs a 'config' field of type 'record'")
    out = {k: json_value(v, k) for k, v in schema.items() if k not in ("name", "fields")}
    return {"name": plugin_name, "fields": fields, **out}


def _fields(fields: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(fields, Sequence) or isinstance(fields, str | bytes):
        raise SchemaError(f"{path}: 'fields' must be a list of one-key dicts")
    out = []
    for i, entry in enumerate(fields):
        where = f"{path}[{i}]"
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise SchemaError(f"{where}: each field must be a dict with exactly one key, "
                              f"e.g. {{'message': {{'type': 'string'}}}}")
        ((name, spec),) = entry.items()
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{where}: field names must be non-empty strings")
        out.append({name: _field(spec, f"{path}.{name}")})
    return out


def _field(spec: Any, path: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise SchemaError(f"{path}: a field definition must be a dict with a 'type'")
    type_ = spec.get("type")
    if type_ not in KONG_TYPES:
        known = ", ".join(sorted(KONG_TYPES))
        raise SchemaError(f"{path}: unknown type {type_!r} (Kong knows: {known})")
    out = {k: json_value(v, f"{path}.{k}") for k, v in spec.items()}
    if type_ in ("array", "set"):
        out["elements"] = _field(_required(spec, "elements", path), f"{path}.elements")
    elif type_ == "map":
        out["keys"] = _field(_required(spec, "keys", path), f"{path}.keys")
        out["values"] = _field(_required(spec, "values", path), f"{path}.values")
    elif type_ == "record":
        out["fields"] = _fields(_required(spec, "fields", path), path)
    return out


def _required(spec: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in spec:
        raise SchemaError(f"{path}: a {spec['type']} field needs {key!r}")
    return spec[key]


def json_value(value: Any, path: str) -> Any:
    """A JSON-clean copy for a schema: tuples and sets become lists (sets sorted), dataclass
    instances become dicts; functions, NaN and other objects are refused."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [json_value(v, path) for v in items]
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"{path}: {value} cannot be written as JSON")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise SchemaError(f"{path}: {type(value).__name__} values cannot be written as JSON")
