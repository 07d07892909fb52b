"""The gateway itself: kong.node, kong.cluster, kong.ip, kong.vault."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from kongish_pdk.testing.fake_kong.state import StateBacked

NODE_ID = "5f1a2b3c-0000-4000-8000-00000000c001"
CLUSTER_ID = "5f1a2b3c-0000-4000-8000-00000000c002"


class NodeMixin(StateBacked):
    """``kong.node``, ``kong.cluster``, ``kong.ip`` and ``kong.vault``."""

    # ----------------------------------------------------------------- node, cluster, ip

    def pdk_node_get_id(self, args: list[Any]) -> Any:
        return NODE_ID

    def pdk_node_get_hostname(self, args: list[Any]) -> Any:
        return "kongish-kit"

    def pdk_node_get_memory_stats(self, args: list[Any]) -> Any:
        return {"lua_shared_dicts": {"kong": {"allocated_slabs": 0, "capacity": 5242880}},
                "workers_lua_vms": [{"http_allocated_gc": 0, "pid": 1}]}

    def pdk_cluster_get_id(self, args: list[Any]) -> Any:
        return CLUSTER_ID

    def pdk_ip_is_trusted(self, args: list[Any]) -> Any:
        return False  # Kong's default trusted_ips is empty

    # ----------------------------------------------------------------- kong.vault

    def pdk_vault_is_reference(self, args: list[Any]) -> Any:
        ref = args[0]
        return isinstance(ref, str) and ref.startswith("{vault://") and ref.endswith("}")

    def pdk_vault_get(self, args: list[Any]) -> Any:
        return self.state.request.vault.get(args[0])

    def pdk_vault_parse_reference(self, args: list[Any]) -> Any:
        ref = args[0]
        if not self.pdk_vault_is_reference([ref]):
            return None
        inner = ref[len("{vault://"):-1]
        name, _, rest = inner.partition("/")
        resource, _, query = rest.partition("?")
        resource, _, key = resource.partition("/")
        out: dict[str, Any] = {"name": name, "resource": resource}
        if key:
            out["key"] = key
        if query:
            out["config"] = dict(parse_qsl(query))
        return out

    def pdk_vault_flush(self, args: list[Any]) -> Any:
        return None

    def pdk_vault_warmup(self, args: list[Any]) -> Any:
        return args[0]
