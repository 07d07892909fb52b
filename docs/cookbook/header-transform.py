"""Recipe: header transformations on both sides of the proxy.

Request side (``kong.service.request``): rename, add (with ``$path``, ``$method``,
``$client_ip`` and ``$header:<name>`` placeholders) and remove headers the upstream
receives. Response side (``kong.response``): add headers the client receives, set in
``access`` so they apply to whatever the upstream answers.
"""

import re
from dataclasses import dataclass, field

from kongish_pdk.pdk import Kong

version = "1.0.0"
priority = 800


@dataclass(frozen=True)
class RequestRules:
    rename: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    request: RequestRules = field(default_factory=RequestRules)
    response_add: dict[str, str] = field(default_factory=dict)


_PLACEHOLDER = re.compile(r"\$(path|method|client_ip|header:[A-Za-z0-9_-]+)")


class Plugin:
    def __init__(self, config: Config) -> None:
        self.config = config

    def access(self, kong: Kong) -> None:
        rules = self.config.request
        for old, new in rules.rename.items():
            value = kong.request.get_headers().get(old.lower())
            if value:
                kong.service.request.clear_header(old)
                kong.service.request.set_header(new, value)
        for name, template in rules.add.items():
            kong.service.request.set_header(name, self._expand(kong, template))
        for name in rules.remove:
            kong.service.request.clear_header(name)
        for name, value in self.config.response_add.items():
            kong.response.set_header(name, value)

    @staticmethod
    def _expand(kong: Kong, template: str) -> str:
        def value(match: re.Match[str]) -> str:
            what = match.group(1)
            if what == "path":
                return kong.request.get_path()
            if what == "method":
                return kong.request.get_method()
            if what == "client_ip":
                return kong.client.get_forwarded_ip() or ""
            return kong.request.get_header(what.partition(":")[2]) or ""

        return _PLACEHOLDER.sub(value, template)
