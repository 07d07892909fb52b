"""Recipe: rewriting the response body (redacting fields of JSON responses).

A plugin with a ``response`` phase makes Kong buffer the upstream's whole response. Read it
with ``kong.service.response.get_raw_body()`` and replace it with ``kong.response.exit``:
``kong.response.get_raw_body``/``set_raw_body`` exist only in Kong's ``body_filter`` phase,
which an external plugin never runs. Headers already on the response are kept.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from kongish_pdk.pdk import Kong

version = "1.0.0"
priority = 790


@dataclass(frozen=True)
class Config:
    fields: list[str] = field(default_factory=lambda: ["password", "ssn"])
    replacement: str = "[REDACTED]"


class Plugin:
    def __init__(self, config: Config) -> None:
        self.fields = frozenset(config.fields)
        self.replacement = config.replacement

    def response(self, kong: Kong) -> None:
        content_type = kong.response.get_header("content-type") or ""
        if "json" not in content_type:
            return
        try:
            document = json.loads(kong.service.response.get_raw_body() or b"")
        except ValueError:
            return
        redacted, changed = self._redact(document)
        if changed:
            kong.response.set_header("x-redacted", "true")
            kong.response.exit(kong.response.get_status(), json.dumps(redacted).encode())

    def _redact(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, dict):
            out, changed = {}, False
            for key, item in value.items():
                if key in self.fields:
                    out[key], changed = self.replacement, True
                else:
                    out[key], sub = self._redact(item)
                    changed = changed or sub
            return out, changed
        if isinstance(value, list):
            pairs = [self._redact(v) for v in value]
            return [v for v, _ in pairs], any(c for _, c in pairs)
        return value, False
