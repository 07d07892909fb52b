from pathlib import Path

import pytest

from kongish_pdk.testing import Kit, Request

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])


def test_greets_the_host(plugin_kit: Kit) -> None:
    hello = plugin_kit.load(PLUGINS / "py-hello.py", {"message": "hi"})
    result = hello.run(Request(headers={"Host": "example.com"}))
    assert result.response.status == 200
    assert result.response.header("x-hello-from-python") == "Python says hi to example.com"
    assert result.response.header("x-python-pid")  # whichever process ran it
    assert result.service_request is not None  # proxied as usual


def test_default_message_comes_from_the_schema(plugin_kit: Kit) -> None:
    hello = plugin_kit.load(PLUGINS / "py-hello.py")
    result = hello.run(Request(host="api.test"))
    assert result.response.header("x-hello-from-python") == "Python says hello to api.test"
