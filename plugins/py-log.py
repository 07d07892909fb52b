"""py-log: writes one JSON line per request to a file (a log-phase plugin).

Kong runs the ``log`` phase after the client has its response, from a snapshot of the
request; ``kong.log.serialize()`` returns that snapshot as a JSON string. The line keeps
what a log pipeline usually wants and is appended to ``path`` (the plugin server's own file
system); with no path, it goes to Kong's error log through ``kong.log.notice``.
"""

import json
import threading

from kongish_pdk.pdk import Kong

Schema = (
    {"path": {"type": "string"}},
    {"tag": {"type": "string", "default": "py-log"}},
)
version = "1.0.0"
priority = 5


class Plugin:
    def __init__(self, config: dict) -> None:
        self.path = config.get("path")
        self.tag = config.get("tag") or "py-log"
        self._lock = threading.Lock()  # several events of one instance may log at once

    def log(self, kong: Kong) -> None:
        entry = json.loads(kong.log.serialize() or "{}")
        request = entry.get("request") or {}
        response = entry.get("response") or {}
        line = json.dumps({
            "tag": self.tag,
            "method": request.get("method"),
            "uri": request.get("uri"),
            "status": response.get("status"),
            "client_ip": entry.get("client_ip"),
            "latency_ms": (entry.get("latencies") or {}).get("request"),
        })
        if self.path is None:
            kong.log.notice(line)
            return
        with self._lock, open(self.path, "a", encoding="utf-8") as sink:
            sink.write(line + "\n")
