"""What a plugin is once loaded: its class plus the metadata Kong reads from the dump.

``build_spec`` applies every rule Kong would apply later (version format, integer priority,
schema shape), so a mistake is reported at load time with the file's name instead of as
"Not a plugin info table" in Kong's log.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kongish_pdk.errors import PluginLoadError
from kongish_pdk.pdk.table import PHASES
from kongish_pdk.plugin import typed_config
from kongish_pdk.plugin.schema import SchemaError, to_kong_schema

log = logging.getLogger("kongish_pdk.plugin")

# Kong 3.x parses Version with at most three numeric components.
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")

# Methods Kong cannot call over a plugin socket (no cosockets in those nginx phases).
UNREACHABLE_PHASES = ("header_filter", "body_filter", "init_worker")


def identity_config(config: dict[str, Any]) -> Any:
    return config


@dataclass(frozen=True)
class PluginSpec:
    """A validated plugin: everything the runtime and the dump need."""

    name: str
    cls: type
    version: str
    priority: int
    phases: tuple[str, ...]
    schema: dict[str, Any]
    source: str  # file the plugin came from, for messages and Modtime
    modtime: float = 0.0
    # Turns the decoded (stripped) config dict into what Plugin.__init__ receives.
    make_config: Callable[[dict[str, Any]], Any] = identity_config
    accepts_meta: bool = False  # Plugin.__init__(config, meta) instead of (config)
    warnings: tuple[str, ...] = field(default=())

    def info(self) -> dict[str, Any]:
        """The plugin's entry in a dump (and the GetPluginInfo result)."""
        return {
            "Name": self.name,
            "Phases": list(self.phases),
            "Priority": self.priority,
            "Version": self.version,
            "Schema": self.schema,
        }


def find_phases(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The phase methods Kong can call, and warnings for those it cannot."""
    phases = tuple(p for p in PHASES if callable(getattr(cls, p, None)))
    warnings = tuple(
        f"Plugin.{name} will never run: Kong cannot drive the {name} phase of an external "
        f"plugin (use 'response' to read or change the response)"
        for name in UNREACHABLE_PHASES
        if callable(getattr(cls, name, None))
    )
    return phases, warnings


def _accepts_meta(cls: type) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "meta" in params


def build_spec(
    name: str,
    *,
    cls: Any,
    version: Any,
    priority: Any,
    schema: Any,
    source: str,
    modtime: float = 0.0,
) -> PluginSpec:
    """Validate a plugin's pieces; raise :class:`PluginLoadError` naming ``source``."""
    if not isinstance(cls, type):
        raise PluginLoadError(source, f"Plugin must be a class, not {type(cls).__name__}")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise PluginLoadError(
            source,
            f"version must be a string like '1.0.0' with at most three numeric parts "
            f"(Kong refuses others), got {version!r}",
        )
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PluginLoadError(source, f"priority must be an integer, got {priority!r}")
    make_config: Callable[[dict[str, Any]], Any] = identity_config
    try:
        typed = typed_config.config_type(cls)
        if typed is not None:
            if schema is not None:
                raise PluginLoadError(source, f"declares both Schema and a typed config "
                                      f"({typed.__name__}); the typed config is the schema, "
                                      f"remove Schema")
            schema = typed_config.kong_fields(typed)
            make_config = typed_config.converter(typed)
    except typed_config.TypedConfigError as exc:
        raise PluginLoadError(source, f"invalid typed config: {exc}") from None
    phases, warnings = find_phases(cls)
    if not phases:
        raise PluginLoadError(
            source, f"class Plugin defines none of the phases Kong can call: {', '.join(PHASES)}"
        )
    try:
        kong_schema = to_kong_schema(name, schema)
    except SchemaError as exc:
        raise PluginLoadError(source, f"invalid Schema: {exc}") from None
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    return PluginSpec(
        name=name,
        cls=cls,
        version=version,
        priority=priority,
        phases=phases,
        schema=kong_schema,
        source=source,
        modtime=modtime,
        make_config=make_config,
        accepts_meta=_accepts_meta(cls),
        warnings=warnings,
    )
