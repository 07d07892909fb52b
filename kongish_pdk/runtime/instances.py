"""Plugin instances: one per StartInstance (each Kong worker starts its own per config)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kongish_pdk.errors import RPCError
from kongish_pdk.plugin.spec import PluginSpec

# Keys Kong adds to the config JSON; the plugin never sees them (kong-protocol.md 2.5).
KONG_META_KEYS = ("__plugin_id", "__ws_id", "__key__", "__seq__")


@dataclass(frozen=True)
class InstanceMeta:
    """Kong's bookkeeping for an instance, kept out of the plugin's config.

    A plugin whose ``__init__`` accepts a ``meta`` argument receives this.
    """

    instance_id: int
    plugin_id: str | None = None
    ws_id: str | None = None
    key: str | None = None
    seq: int | None = None


def decode_config(plugin: str, raw: Any) -> dict[str, Any]:
    """Kong sends Config as a JSON *string* inside msgpack; tolerate a map as well."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "surrogateescape")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise RPCError(f"plugin {plugin!r}: Config is not valid JSON: {exc}") from None
    if raw is None or raw == []:  # cjson/lua-MessagePack render an empty table as []
        return {}
    if not isinstance(raw, dict):
        raise RPCError(f"plugin {plugin!r}: Config must be a JSON object, got {type(raw).__name__}")
    return raw


def split_config(config: dict[str, Any], instance_id: int) -> tuple[dict[str, Any], InstanceMeta]:
    """The plugin's own config, and Kong's metadata keys."""
    user = {k: v for k, v in config.items() if k not in KONG_META_KEYS}
    seq = config.get("__seq__")
    meta = InstanceMeta(
        instance_id=instance_id,
        plugin_id=config.get("__plugin_id"),
        ws_id=config.get("__ws_id"),
        key=config.get("__key__"),
        seq=seq if isinstance(seq, int) else None,
    )
    return user, meta


@dataclass(eq=False)
class Instance:
    """A started plugin configuration. ``plugin`` is set by executors that run it in-process."""

    id: int
    spec: PluginSpec
    config: dict[str, Any]  # as Kong sent it, for status replies
    plugin_config: Any  # what Plugin.__init__ receives (stripped dict, or a typed config)
    meta: InstanceMeta
    started_at: float  # wall clock, seconds
    last_used: float  # monotonic clock
    plugin: Any = None
    active: int = 0  # events in flight
    closing: bool = False  # CloseInstance arrived; destroy when the last event ends
    executor_state: dict[str, Any] = field(default_factory=dict)

    def status(self, with_start_time: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"Name": self.spec.name, "Id": self.id, "Config": self.config}
        if with_start_time:
            out["StartTime"] = self.started_at
        return out


def new_instance(spec: PluginSpec, instance_id: int, config: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> Instance:
    """The Instance a StartInstance creates from its decoded ``config`` (``decode_config``);
    raises what ``spec.make_config`` raises (ValueError, TypeError) for a config it refuses.

    One place for every path that starts an instance (the runtime, a worker process, the
    testing kit), so the plugin receives the same config and meta on each.
    """
    user_config, meta = split_config(config, instance_id)
    plugin_config = spec.make_config(user_config)
    return Instance(instance_id, spec, config, plugin_config, meta, time.time(), clock())


class InstanceTable:
    """Live instances by id. Not thread-safe: the runtime holds its lock around every use."""

    def __init__(self) -> None:
        self._by_id: dict[int, Instance] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, instance: Instance) -> None:
        self._by_id[instance.id] = instance

    def get(self, instance_id: Any) -> Instance | None:
        return self._by_id.get(instance_id) if isinstance(instance_id, int) else None

    def remove(self, instance_id: int) -> Instance | None:
        return self._by_id.pop(instance_id, None)

    def of_plugin(self, name: str) -> list[Instance]:
        return [i for i in self._by_id.values() if i.spec.name == name]

    def idle(self, now: float, timeout: float) -> list[Instance]:
        """Instances with no event in flight, unused for ``timeout`` seconds (0 = never)."""
        if timeout <= 0:
            return []
        return [i for i in self._by_id.values() if not i.active and now - i.last_used >= timeout]
