"""kong.log and kong.telemetry.log: the lines a plugin writes, and the log serializer."""

from __future__ import annotations

import json
from typing import Any

from kongish_pdk.testing.errors import KongLuaError
from kongish_pdk.testing.fake_kong.state import LogLine, StateBacked
from kongish_pdk.testing.http import header_value_text


def lua_text(value: Any) -> str:
    """Lua's tostring() of a log argument (the bridge already stringified anything else)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return header_value_text(value)


class LogMixin(StateBacked):
    """``kong.log`` and ``kong.telemetry``."""

    def _log(self, level: str, args: list[Any]) -> None:
        message = "".join(lua_text(a) for a in args)
        self.state.logs.append(LogLine(level, message, self.state.phase))

    def pdk_log(self, args: list[Any]) -> Any:
        self._log("notice", args)

    def pdk_log_alert(self, args: list[Any]) -> Any:
        self._log("alert", args)

    def pdk_log_crit(self, args: list[Any]) -> Any:
        self._log("crit", args)

    def pdk_log_err(self, args: list[Any]) -> Any:
        self._log("err", args)

    def pdk_log_warn(self, args: list[Any]) -> Any:
        self._log("warn", args)

    def pdk_log_notice(self, args: list[Any]) -> Any:
        self._log("notice", args)

    def pdk_log_info(self, args: list[Any]) -> Any:
        self._log("info", args)

    def pdk_log_debug(self, args: list[Any]) -> Any:
        self._log("debug", args)

    def pdk_log_emerg(self, args: list[Any]) -> Any:
        self._log("emerg", args)

    def pdk_log_deprecation(self, args: list[Any]) -> Any:
        self._log("deprecation", args)

    def pdk_log_inspect(self, args: list[Any]) -> Any:
        self._log("inspect", args)

    def pdk_log_serialize(self, args: list[Any]) -> Any:
        if self.state.snapshot is None:
            self.state.take_snapshot()
        return self.state.snapshot

    def pdk_log_set_serialize_value(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.log.set_serialize_value: key must be a string")
        mode = (args[2] or {}).get("mode", "set") if len(args) > 2 else "set"
        key, value = args[0], args[1] if len(args) > 1 else None
        exists = key in self.state.serialize_values
        if (mode == "add" and exists) or (mode == "replace" and not exists):
            return None
        self.state.serialize_values[key] = value
        return None

    def pdk_telemetry_log(self, args: list[Any]) -> Any:
        self._log("telemetry", [json.dumps(args[2:4])])
        return None
