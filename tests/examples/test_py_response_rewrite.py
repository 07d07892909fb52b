from pathlib import Path

import pytest

from kongish_pdk.testing import Kit, Request, UpstreamResponse

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])


def test_adds_fields_to_a_json_body(plugin_kit: Kit) -> None:
    rewrite = plugin_kit.load(PLUGINS / "py-response-rewrite.py", {"add_fields": {"via": "kong"}})
    result = rewrite.run(Request(), upstream=UpstreamResponse.json(
        {"id": 7}, status=201, headers={"x-upstream": "1"}))
    assert result.response.status == 201
    assert result.response.json() == {"id": 7, "via": "kong"}
    assert result.response.header("x-response-rewritten") == "201"
    assert result.response.header("x-upstream") == "1"
    assert result.response.header("content-length") == str(len(result.response.body))


def test_leaves_other_bodies_alone(plugin_kit: Kit) -> None:
    rewrite = plugin_kit.load(PLUGINS / "py-response-rewrite.py", {"add_fields": {"via": "kong"}})
    result = rewrite.run(Request(), upstream=UpstreamResponse(
        200, {"content-type": "text/plain"}, b"plain"))
    assert result.response.body == b"plain"
    assert result.response.header("x-response-rewritten") == "200"
    assert result.exit is None
