import json
from pathlib import Path

import pytest

from kongish_pdk.testing import Kit, Request, UpstreamResponse

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
pytestmark = pytest.mark.parametrize("kong_mode", ["local", "wire"])


def test_logs_one_line_per_request_to_kongs_log(plugin_kit: Kit) -> None:
    logger = plugin_kit.load(PLUGINS / "py-log.py", {"tag": "edge"})
    result = logger.run(Request("POST", "/orders?id=3", client_ip="10.1.2.3"),
                        upstream=UpstreamResponse(202))
    (line,) = result.log_messages("notice")
    assert json.loads(line) == {"tag": "edge", "method": "POST", "uri": "/orders?id=3",
                                "status": 202, "client_ip": "10.1.2.3",
                                "latency_ms": json.loads(line)["latency_ms"]}
    assert result.phases == ["log"]


def test_appends_to_a_file(plugin_kit: Kit, tmp_path: Path) -> None:
    sink = tmp_path / "access.log"
    logger = plugin_kit.load(PLUGINS / "py-log.py", {"path": str(sink)})
    for status in (200, 404):
        logger.run(Request(), upstream=UpstreamResponse(status))
    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    assert [x["status"] for x in lines] == [200, 404]
    assert lines[0]["tag"] == "py-log"
