"""What Kong does to a plugin's config before the plugin server sees it.

Kong validates the config against the plugin's schema when it is created (Admin API or
declarative file), fills in defaults, and stores absent optional fields as null. A test that
gives ``{"message": "hi"}`` must therefore reach the plugin as Kong would send it, and a
config Kong would refuse must fail the test, not run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kongish_pdk.plugin.schema import config_record
from kongish_pdk.testing.errors import ConfigRejected


def kong_config(schema: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` with Kong's defaults and nulls filled in; ConfigRejected if Kong refuses it."""
    record = config_record(schema) or {"type": "record", "fields": []}
    return _record(record, dict(config or {}), "config")


def _record(spec: Mapping[str, Any], value: Mapping[str, Any], path: str) -> dict[str, Any]:
    fields = [next(iter(f.items())) for f in spec.get("fields", [])]
    known = {name for name, _ in fields}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigRejected(f"{path}.{unknown[0]}: unknown field (Kong's schema refuses it)")
    out: dict[str, Any] = {}
    for name, field_spec in fields:
        out[name] = _field(field_spec, value.get(name), f"{path}.{name}")
    return out


def _field(spec: Mapping[str, Any], value: Any, path: str) -> Any:
    if value is None:
        if "default" in spec:
            value = copy.deepcopy(spec["default"])
        elif spec.get("type") == "record" and spec.get("required"):
            value = {}
    if value is None:
        if spec.get("required"):
            raise ConfigRejected(f"{path}: required field missing")
        return None
    if spec.get("type") == "record" and isinstance(value, Mapping):
        return _record(spec, value, path)
    return value
