"""py-response-rewrite: edits the upstream's response in the ``response`` phase.

JSON object bodies get the configured fields added; every response gets a header saying so.
Kong buffers the whole response for plugins with a ``response`` phase, so this is the place to
read and replace bodies (``header_filter``/``body_filter`` cannot run over a plugin socket).
The body is read with ``kong.service.response.get_raw_body()`` and replaced with
``kong.response.exit(status, body, headers)``: Kong allows ``kong.response.get_raw_body`` and
``set_raw_body`` only in ``body_filter``, which an external plugin never runs.
"""

import json

from kongish_pdk.pdk import Kong

Schema = (
    {"add_fields": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"},
                    "default": {}}},
    {"header": {"type": "string", "default": "x-response-rewritten"}},
)
version = "1.0.0"
priority = 800


class Plugin:
    def __init__(self, config: dict) -> None:
        self.add_fields = dict(config.get("add_fields") or {})
        self.header = config.get("header") or "x-response-rewritten"

    def response(self, kong: Kong) -> None:
        status = kong.service.response.get_status()
        kong.response.set_header(self.header, str(status))
        content_type = kong.service.response.get_header("content-type") or ""
        if not self.add_fields or "json" not in content_type:
            return
        body = kong.service.response.get_raw_body()
        try:
            document = json.loads(body or b"")
        except ValueError:
            return
        if isinstance(document, dict):
            document.update(self.add_fields)
            # exit() keeps the headers already on the response and sets Content-Length.
            kong.response.exit(status or 200, json.dumps(document).encode())
