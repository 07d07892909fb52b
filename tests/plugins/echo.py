"""Sends back what it receives, to check values survive the wire unchanged."""

import json

from kongish_pdk import PDKError

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config, meta=None):
        self.config = config
        self.meta = meta

    def access(self, kong):
        # A header value, even one that is not UTF-8, goes back byte for byte.
        value = kong.request.get_header("x-in")
        kong.response.set_header("x-out", value if value is not None else "<none>")

    def rewrite(self, kong):
        body = kong.request.get_raw_body()
        headers = kong.request.get_headers()
        captures = kong.request.get_uri_captures()
        consumer = kong.client.get_consumer()
        kong.service.request.set_raw_body(body if body is not None else b"<none>")
        kong.log.notice(json.dumps({
            "body_type": type(body).__name__,
            "headers": headers,
            "captures": captures,
            "consumer": consumer,
        }, sort_keys=True))

    def response(self, kong):
        kong.response.set_header("x-config", json.dumps(self.config, sort_keys=True))
        meta = self.meta
        kong.response.set_header("x-meta", f"{meta.plugin_id} {meta.seq} {meta.instance_id}")

    def log(self, kong):
        try:
            result = kong.request.get_header("x-fails")
        except PDKError as exc:
            result = f"PDKError: {exc}"
        kong.log.notice(repr(result))
