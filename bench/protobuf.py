"""ProtoBuf:1 vs MsgPack:1 (ours) vs the incumbent (kong-pdk 0.36, MsgPack:1): events/s.

    python bench/protobuf.py                  # 5 alternating rounds, 4 s each, both plugins
    python bench/protobuf.py --rounds 3 --seconds 3 --plugins hello --modes threads

Each round starts every server in turn (alternating, so drift hits all alike), drives it with
Kong-like clients for ``--seconds`` and stops it by PID. Clients are separate processes
(``--clients``), each with ``--threads`` threads that run events back to back, like the
concurrent requests of Kong workers: MsgPack:1 through ``KongClient`` (pooled connections,
steps hop between them), ProtoBuf:1 through ``PBKongClient`` (one connection per event in
lockstep). Plugins: ``hello`` (1 header read, 2 header writes: 4 RPCs over MsgPack:1) and
``ten`` (10 PDK calls). Besides events/s, the server's own CPU time per event is read from
/proc (all threads): it does not depend on how much CPU the Python clients take from the
server on a small machine. Medians over rounds and their ratios are printed and written to
``bench/results/protobuf.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kongish_pdk.testing import KongClient, start_server  # noqa: E402
from kongish_pdk.testing.server_process import ServerProcess  # noqa: E402

PLUGINS = Path(__file__).resolve().parent / "plugins"
RESULTS = Path(__file__).resolve().parent / "results"
MODE_FLAGS = {"threads": [], "gevent": ["-g"]}


def answer(method: str, args: list[Any]) -> Any:
    if method.endswith("get_header"):
        return "bench.example"
    if method.startswith("kong.request.get_"):
        return "/bench" if method.endswith("path") else "GET"
    return None


def _client(path: str, protocol: str, plugin: str, threads: int, start_at: float,
            stop_at: float, out: Any) -> None:
    """One client process: ``threads`` threads running events back to back."""
    if protocol == "protobuf":
        from kongish_pdk.testing.pb_client import PBKongClient

        client: Any = PBKongClient(path, timeout=30, fast=True)
    else:
        client = KongClient(path, timeout=30, fast=True)
        client.warm(threads)
    iid = client.start_instance(plugin, {"message": "bench"})
    counts = [0] * threads

    def run(i: int) -> None:
        while time.monotonic() < start_at:
            client.run_event(iid, "access", answer)  # warm-up, not counted
        n = 0
        while time.monotonic() < stop_at:
            client.run_event(iid, "access", answer)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.close()
    out.put(sum(counts))


class Target:
    def __init__(self, name: str, protocol: str, mode: str) -> None:
        self.name, self.protocol, self.mode = name, protocol, mode

    def start(self, prefix: Path) -> tuple[Any, str]:
        if self.name.startswith("incumbent"):
            import subprocess

            from tests.support.incumbent import (
                kong_pdk_venv,
                server_command,
                socket_path,
                wait_for_socket,
            )

            flags = ["-g"] if self.mode == "gevent" else []
            command = server_command(kong_pdk_venv(), PLUGINS, prefix, *flags)
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            wait_for_socket(socket_path(prefix), proc)
            return proc, str(socket_path(prefix))
        server = start_server(PLUGINS, "--protocol", self.protocol, *MODE_FLAGS[self.mode],
                              prefix=str(prefix))
        return server, server.socket_path

    @staticmethod
    def stop(handle: Any) -> None:
        if isinstance(handle, ServerProcess):
            handle.stop()
        else:
            handle.terminate()
            handle.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(target: Target, plugin: str, seconds: float, clients: int, threads: int,
            warmup: float) -> tuple[float, float]:
    """(events per second, server CPU microseconds per event)."""
    with tempfile.TemporaryDirectory(prefix="kb-") as tmp:
        handle, path = target.start(Path(tmp))
        try:
            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            start_at = time.monotonic() + warmup + 1.0  # + process start-up
            stop_at = start_at + seconds
            procs = [ctx.Process(target=_client, args=(path, target.protocol, plugin, threads,
                                                       start_at, stop_at, out))
                     for _ in range(clients)]
            for p in procs:
                p.start()
            pid = handle.pid
            time.sleep(max(0.0, start_at - time.monotonic()))
            cpu_start = cpu_seconds(pid)
            time.sleep(max(0.0, stop_at - time.monotonic()))
            cpu = cpu_seconds(pid) - cpu_start
            total = sum(out.get(timeout=seconds + warmup + 60) for _ in procs)
            for p in procs:
                p.join(10)
            return total / seconds, cpu * 1e6 / max(total, 1)
        finally:
            target.stop(handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per client process")
    parser.add_argument("--plugins", default="hello,ten")
    parser.add_argument("--modes", default="threads", help="threads,gevent")
    parser.add_argument("--no-incumbent", action="store_true")
    args = parser.parse_args()

    targets: list[Target] = []
    for mode in args.modes.split(","):
        targets += [Target(f"protobuf-{mode}", "protobuf", mode),
                    Target(f"msgpack-{mode}", "msgpack", mode)]
        if not args.no_incumbent:
            targets.append(Target(f"incumbent-{mode}", "msgpack", mode))
    results: dict[str, dict[str, list[float]]] = {}
    cpu_us: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        order = targets if r % 2 == 0 else targets[::-1]  # alternate the order too
        for plugin in args.plugins.split(","):
            for target in order:
                rate, cpu = measure(target, plugin, args.seconds, args.clients, args.threads,
                                    args.warmup)
                results.setdefault(plugin, {}).setdefault(target.name, []).append(rate)
                cpu_us.setdefault(plugin, {}).setdefault(target.name, []).append(cpu)
                print(f"round {r + 1} {plugin:5} {target.name:18} {rate:8.0f} events/s "
                      f"{cpu:7.0f} server-CPU-us/event", flush=True)

    summary: dict[str, Any] = {"args": vars(args), "runs": results, "cpu_us_per_event": cpu_us,
                               "medians": {}, "ratios": {}, "cpu_medians": {}}
    print()
    for plugin, by_target in results.items():
        medians = {name: statistics.median(rates) for name, rates in by_target.items()}
        summary["medians"][plugin] = medians
        cpu_medians = {name: statistics.median(v) for name, v in cpu_us[plugin].items()}
        summary["cpu_medians"][plugin] = cpu_medians
        for name, value in medians.items():
            print(f"median {plugin:5} {name:18} {value:8.0f} events/s "
                  f"{cpu_medians[name]:7.0f} server-CPU-us/event")
        for mode in args.modes.split(","):
            pb, mp = medians[f"protobuf-{mode}"], medians[f"msgpack-{mode}"]
            ratios = {"protobuf/msgpack": pb / mp}
            if f"incumbent-{mode}" in medians:
                ratios["protobuf/incumbent"] = pb / medians[f"incumbent-{mode}"]
                ratios["msgpack/incumbent"] = mp / medians[f"incumbent-{mode}"]
            summary["ratios"][f"{plugin}-{mode}"] = ratios
            print(f"ratios {plugin:5} {mode:8} " + "  ".join(
                f"{k} {v:.2f}x" for k, v in ratios.items()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "protobuf.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
