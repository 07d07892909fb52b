"""Every cookbook recipe (docs/cookbook/) runs, in-process and over the real wire."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kongish_pdk.testing import Kit, Request, UpstreamResponse

COOKBOOK = Path(__file__).resolve().parent.parent / "docs" / "cookbook"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])

SECRET = "0123456789abcdef-secret"


def token(user: str, secret: str = SECRET) -> str:
    return f"Bearer {user}." + hmac.new(secret.encode(), user.encode(),
                                        hashlib.sha256).hexdigest()


def test_token_auth(plugin_kit: Kit) -> None:
    auth = plugin_kit.load(COOKBOOK / "token-auth.py", {"secret": SECRET})
    denied = auth.run(Request(headers={"authorization": token("mallory", "wrong-secret-123")}))
    assert denied.response.status == 401 and denied.service_request is None
    assert denied.response.header("www-authenticate") == 'Bearer realm="kong"'
    allowed = auth.run(Request(headers={"authorization": token("alice")}))
    assert allowed.response.status == 200
    assert allowed.service_request is not None
    assert allowed.service_request.header("x-authenticated-user") == "alice"
    assert allowed.service_request.header("authorization") is None
    assert allowed.called("kong.client.authenticate")[0].args[0]["username"] == "alice"


def test_rate_limit_shares_one_count_across_instances(plugin_kit: Kit) -> None:
    config = {"limit": 2, "window_seconds": 3600, "limit_by": "ip"}
    # Two instances, as two Kong workers would start: they share the server's store.
    first = plugin_kit.load(COOKBOOK / "rate-limit.py", config)
    second = plugin_kit.load(COOKBOOK / "rate-limit.py", config)
    client = Request(client_ip=f"2001:db8::{uuid.uuid4().hex[:4]}")  # a fresh key per run
    statuses = [p.run(client).response.status for p in (first, second, first)]
    assert statuses == [200, 200, 429]
    limited = second.run(client)
    assert limited.response.json() == {"message": "API rate limit exceeded"}
    assert limited.response.header("x-ratelimit-remaining") == "0"
    assert int(limited.response.header("retry-after") or 0) >= 1


def test_header_transform(plugin_kit: Kit) -> None:
    transform = plugin_kit.load(COOKBOOK / "header-transform.py", {
        "request": {"rename": {"x-old": "x-new"},
                    "add": {"x-route": "$method $path from $client_ip ($header:user-agent)"},
                    "remove": ["cookie"]},
        "response_add": {"x-served-by": "kong"},
    })
    result = transform.run(
        Request("PUT", "/a/b", headers={"x-old": ["1", "2"], "cookie": "c",
                                        "user-agent": "curl"}, client_ip="192.0.2.1"),
        upstream=UpstreamResponse(204, {"x-upstream": "yes"}))
    sent = result.service_request
    assert sent is not None
    assert sent.headers["x-new"] == ["1", "2"] and "x-old" not in sent.headers
    assert sent.header("x-route") == "PUT /a/b from 192.0.2.1 (curl)"
    assert sent.header("cookie") is None
    assert result.response.status == 204
    assert result.response.header("x-served-by") == "kong"
    assert result.response.header("x-upstream") == "yes"


def test_redact_response(plugin_kit: Kit) -> None:
    redact = plugin_kit.load(COOKBOOK / "redact-response.py")
    body = {"user": "a", "password": "p", "items": [{"ssn": "1"}, {"ok": 1}]}
    result = redact.run(Request(), upstream=UpstreamResponse.json(body, status=200))
    assert result.response.json() == {"user": "a", "password": "[REDACTED]",
                                      "items": [{"ssn": "[REDACTED]"}, {"ok": 1}]}
    assert result.response.header("x-redacted") == "true"
    untouched = redact.run(Request(), upstream=UpstreamResponse.json({"user": "a"}))
    assert untouched.response.json() == {"user": "a"} and untouched.exit is None


class _Collector(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.server.received.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_log_posts_the_summary(plugin_kit: Kit, collector: ThreadingHTTPServer) -> None:
    port = collector.server_address[1]
    logger = plugin_kit.load(COOKBOOK / "http-log.py",
                             {"endpoint": f"http://127.0.0.1:{port}/logs", "tag": "edge"})
    logger.run(Request("GET", "/orders?page=1"), upstream=UpstreamResponse(200))
    # The log handler posts before it returns, and run() returns after the log phase.
    (entry,) = collector.received  # type: ignore[attr-defined]
    assert entry["tag"] == "edge"
    assert entry["request"]["uri"] == "/orders?page=1"
    assert entry["response"]["status"] == 200


def test_http_log_reports_an_unreachable_sink(plugin_kit: Kit) -> None:
    logger = plugin_kit.load(COOKBOOK / "http-log.py",
                             {"endpoint": "http://127.0.0.1:9/unreachable",
                              "timeout_seconds": 0.5})
    result = logger.run(Request())
    (message,) = result.log_messages("err")
    assert message.startswith("http-log: could not send to http://127.0.0.1:9/unreachable")
