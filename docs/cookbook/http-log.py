"""Recipe: logging every request to an external sink (an HTTP collector).

The ``log`` phase runs after the client has its response (Kong runs it in a timer), so a
slow sink never slows requests down; it only holds one of the server's handler threads.
``kong.log.serialize()`` is the request summary Kong's own log plugins send, as a JSON
string; the recipe adds its own fields with ``kong.log.set_serialize_value`` in ``access``
(values must be set before the log phase: Kong snapshots the summary when the request ends).
"""

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Annotated

from kongish_pdk.config import Between
from kongish_pdk.pdk import Kong

version = "1.0.0"
priority = 12


@dataclass(frozen=True)
class Config:
    endpoint: str
    timeout_seconds: Annotated[float, Between(0.1, 30)] = 2.0
    headers: dict[str, str] = field(default_factory=dict)
    tag: str = "kong"


class Plugin:
    def __init__(self, config: Config) -> None:
        self.config = config

    def access(self, kong: Kong) -> None:
        kong.log.set_serialize_value("tag", self.config.tag)

    def log(self, kong: Kong) -> None:
        entry = json.loads(kong.log.serialize() or "{}")
        request = urllib.request.Request(
            self.config.endpoint, data=json.dumps(entry).encode(), method="POST",
            headers={"content-type": "application/json", **self.config.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as reply:
                reply.read()
        except OSError as exc:  # the request is over: report, never raise
            kong.log.err(f"http-log: could not send to {self.config.endpoint}: {exc}")
