from pathlib import Path

import pytest

from kongish_pdk.testing import ConfigRejected, Kit, Request

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])


def test_rewrites_what_the_upstream_receives(plugin_kit: Kit) -> None:
    transform = plugin_kit.load(PLUGINS / "py-request-transform.py", {
        "add_headers": {"x-team": "blue"},
        "remove_headers": ["cookie"],
        "add_query": {"source": "kong"},
        "strip_prefix": "/api/v1",
        "new_prefix": "/v1",
    })
    result = transform.run(Request(path="/api/v1/users?page=2",
                                   headers={"cookie": "a=b", "accept": "x/y"}))
    sent = result.service_request
    assert sent is not None
    assert sent.path == "/v1/users"
    assert sent.query == {"page": ["2"], "source": ["kong"]}
    assert sent.header("x-team") == "blue"
    assert sent.header("cookie") is None
    assert sent.header("accept") == "x/y"


def test_typed_config_refuses_a_bad_field(plugin_kit: Kit) -> None:
    with pytest.raises(ConfigRejected, match=r"config\.add_headers\.x: expected a string"):
        plugin_kit.load(PLUGINS / "py-request-transform.py", {"add_headers": {"x": 1}})
    with pytest.raises(ConfigRejected, match=r"config\.strip_prefix: length must be at least 1"):
        plugin_kit.load(PLUGINS / "py-request-transform.py", {"strip_prefix": ""})
