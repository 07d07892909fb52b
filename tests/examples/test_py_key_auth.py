from pathlib import Path

import pytest

from kongish_pdk.testing import ConfigRejected, Kit, Request

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])

KEYS = {"keys": {"s3cret": "alice"}}


def test_missing_key_is_rejected_before_the_upstream(plugin_kit: Kit) -> None:
    auth = plugin_kit.load(PLUGINS / "py-key-auth.py", KEYS)
    result = auth.run(Request())
    assert result.response.status == 401
    assert result.response.json() == {"message": "No API key found in request"}
    assert result.response.header("www-authenticate") == 'Key realm="kong"'
    assert result.service_request is None


def test_wrong_key_is_rejected(plugin_kit: Kit) -> None:
    auth = plugin_kit.load(PLUGINS / "py-key-auth.py", KEYS)
    result = auth.run(Request(headers={"apikey": "guess"}))
    assert result.response.status == 401
    assert result.exit is not None and result.exit.phase == "access"


def test_valid_key_names_the_consumer_and_hides_the_key(plugin_kit: Kit) -> None:
    auth = plugin_kit.load(PLUGINS / "py-key-auth.py", KEYS)
    result = auth.run(Request(headers={"ApiKey": "s3cret"}))
    assert result.response.status == 200
    sent = result.service_request
    assert sent is not None
    assert sent.header("x-consumer-username") == "alice"
    assert sent.header("apikey") is None


def test_key_in_query_when_allowed(plugin_kit: Kit) -> None:
    auth = plugin_kit.load(PLUGINS / "py-key-auth.py", {**KEYS, "key_in_query": True})
    result = auth.run(Request(path="/x?apikey=s3cret"))
    assert result.service_request is not None
    assert result.service_request.header("x-consumer-username") == "alice"


def test_keys_are_required(plugin_kit: Kit) -> None:
    with pytest.raises(ConfigRejected, match="keys: required"):
        plugin_kit.load(PLUGINS / "py-key-auth.py", {})
