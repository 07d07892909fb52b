"""kong.client: who is calling, and the consumer they authenticate as."""

from __future__ import annotations

from typing import Any

from kongish_pdk.testing.errors import KongLuaError
from kongish_pdk.testing.fake_kong.state import StateBacked


class ClientMixin(StateBacked):
    """``kong.client`` and ``kong.client.tls``."""

    def pdk_client_get_ip(self, args: list[Any]) -> Any:
        return self.state.request.client_ip

    pdk_client_get_forwarded_ip = pdk_client_get_ip

    def pdk_client_get_port(self, args: list[Any]) -> Any:
        return self.state.request.client_port

    pdk_client_get_forwarded_port = pdk_client_get_port

    def pdk_client_get_credential(self, args: list[Any]) -> Any:
        return self.state.credential

    def pdk_client_get_consumer(self, args: list[Any]) -> Any:
        return self.state.consumer

    def pdk_client_load_consumer(self, args: list[Any]) -> Any:
        wanted, by_username = args[0], len(args) > 1 and bool(args[1])
        for consumer in self.state.request.consumers:
            if consumer.get("id") == wanted or (by_username and consumer.get("username") ==
                                                wanted):
                return dict(consumer)
        return None

    def pdk_client_authenticate(self, args: list[Any]) -> Any:
        consumer = args[0] if args else None
        credential = args[1] if len(args) > 1 else None
        if consumer is None and credential is None:
            raise KongLuaError("kong.client.authenticate: either credential or consumer must "
                               "be provided")
        self.state.consumer, self.state.credential = consumer, credential
        return None

    def pdk_client_get_protocol(self, args: list[Any]) -> Any:
        route = self.state.request.route
        if route is None:
            return None
        protocols = route.get("protocols") or []
        if len(protocols) == 1:
            return protocols[0]
        return self.state.request.scheme

    def pdk_client_tls_request_client_certificate(self, args: list[Any]) -> Any:
        return True

    def pdk_client_tls_disable_session_reuse(self, args: list[Any]) -> Any:
        return True

    def pdk_client_tls_get_full_client_certificate_chain(self, args: list[Any]) -> Any:
        return self.state.request.client_certificate_chain

    def pdk_client_tls_set_client_verify(self, args: list[Any]) -> Any:
        self.state.proxy_settings["client_verify"] = args[0]
        return None
