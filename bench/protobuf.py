"""ProtoBuf:1 vs MsgPack:1 (ours) vs the incumbent (kong-pdk 0.36, MsgPack:1): events/s.

    .venv/bin/python bench/protobuf.py                       # 5 rounds, threads mode
    .venv/bin/python bench/protobuf.py --rounds 7 --seconds 4 --modes threads,gevent,processes

Each round starts every server in turn (the order alternates between rounds, so drift on a
shared machine hits all alike), drives it for ``--seconds`` with a lean single-process
Kong-like client (``pb_loadgen.py``: ``--concurrency`` virtual requests running events back
to back) and stops it by PID. Plugins (``bench/plugins/``): ``bench_hello`` (one header read, two
header writes: 4 RPCs over MsgPack:1) and ``bench_ten`` (ten PDK calls). Besides events/s the
server's own CPU time per event (all its threads and processes, from /proc) is reported: it
depends less on how much CPU the client takes on a 2-core machine. Medians over rounds and
their ratios are printed and written to ``bench/results/protobuf.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from pb_loadgen import MsgPackLoad, ProtoBufLoad

from kongish_pdk.testing import start_server
from tests.support import incumbent as incumbent_server
from tests.support.incumbent import socket_path
from tests.support.procstat import host_cpu_ticks, stolen_since, tree_cpu_seconds

PLUGINS = BENCH / "plugins"
RESULTS = BENCH / "results"
MODE_FLAGS = {"threads": [], "gevent": ["-g"], "processes": ["-m", "--workers", "2"]}


@dataclass(frozen=True)
class Target:
    name: str
    protocol: str  # what the client speaks
    start: Callable[[Path], tuple[int, str, Callable[[], None]]]  # -> pid, socket, stop


def ours(protocol: str, mode: str) -> Callable[[Path], tuple[int, str, Callable[[], None]]]:
    def start(prefix: Path) -> tuple[int, str, Callable[[], None]]:
        server = start_server(PLUGINS, "--protocol", protocol, *MODE_FLAGS[mode],
                              prefix=str(prefix))
        return server.pid, server.socket_path, server.stop

    return start


def incumbent(mode: str) -> Callable[[Path], tuple[int, str, Callable[[], None]]]:
    def start(prefix: Path) -> tuple[int, str, Callable[[], None]]:
        proc = incumbent_server.start(PLUGINS, prefix, mode)
        return proc.pid, str(socket_path(prefix)), lambda: incumbent_server.stop(proc)

    return start


def measure(target: Target, plugin: str, seconds: float, warmup: float,
            concurrency: int) -> tuple[float, float, float]:
    """(events per second, server CPU microseconds per event, share of the host's CPU time
    stolen for other guests meanwhile)."""
    with tempfile.TemporaryDirectory(prefix="kb-") as tmp:
        pid, path, stop = target.start(Path(tmp))
        try:
            load: Any = (ProtoBufLoad if target.protocol == "protobuf" else MsgPackLoad)(
                path, concurrency)
            try:
                load.start_instance(plugin, {"message": "bench"})
                load.run(warmup)
                cpu, finished, errors = tree_cpu_seconds(pid), load.finished, load.errors
                host = host_cpu_ticks()
                events = load.run(seconds)  # this run's events only, not the warm-up's
                cpu = tree_cpu_seconds(pid) - cpu
                steal = stolen_since(host)
                if load.errors != errors:
                    raise RuntimeError(f"{target.name}: {load.errors - errors} events failed")
                # CPU up to the last event's end, so per event over every event it served
                return events / seconds, cpu * 1e6 / max(load.finished - finished, 1), steal
            finally:
                load.close()
        finally:
            stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--plugins", default="bench_hello,bench_ten")
    parser.add_argument("--modes", default="threads", help="threads,gevent,processes")
    parser.add_argument("--no-incumbent", action="store_true")
    args = parser.parse_args()

    modes = args.modes.split(",")
    targets: list[Target] = []
    for mode in modes:
        targets += [Target(f"protobuf-{mode}", "protobuf", ours("protobuf", mode)),
                    Target(f"msgpack-{mode}", "msgpack", ours("msgpack", mode))]
        if not args.no_incumbent:
            targets.append(Target(f"kong-pdk-{mode}", "msgpack", incumbent(mode)))
    rates: dict[str, dict[str, list[float]]] = {}
    cpus: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for plugin in args.plugins.split(","):
            for target in order:
                rate, cpu, steal = measure(target, plugin, args.seconds, args.warmup,
                                           args.concurrency)
                rates.setdefault(plugin, {}).setdefault(target.name, []).append(rate)
                cpus.setdefault(plugin, {}).setdefault(target.name, []).append(cpu)
                print(f"round {r + 1} {plugin:11} {target.name:19} {rate:7.0f} events/s "
                      f"{cpu:6.0f} server-CPU-us/event  {steal:4.0%} of the host stolen",
                      flush=True)

    summary: dict[str, Any] = {"args": vars(args), "rates": rates, "cpu_us": cpus,
                               "median_rates": {}, "median_cpu_us": {}, "ratios": {}}
    print()
    for plugin, by_target in rates.items():
        med = {n: statistics.median(v) for n, v in by_target.items()}
        med_cpu = {n: statistics.median(v) for n, v in cpus[plugin].items()}
        summary["median_rates"][plugin], summary["median_cpu_us"][plugin] = med, med_cpu
        for name, rate in med.items():
            print(f"median {plugin:11} {name:19} {rate:7.0f} events/s "
                  f"{med_cpu[name]:6.0f} server-CPU-us/event")
        for mode in modes:
            pb, mp = f"protobuf-{mode}", f"msgpack-{mode}"
            # Also the median of each round's own ratio: both servers of a round ran seconds
            # apart at most, so the host's drift between rounds cancels out.
            per_round = [a / b for a, b in zip(by_target[pb], by_target[mp], strict=True)]
            ratios = {"events/s protobuf/msgpack": med[pb] / med[mp],
                      "same, median of rounds": statistics.median(per_round),
                      "CPU/event msgpack/protobuf": med_cpu[mp] / med_cpu[pb]}
            if f"kong-pdk-{mode}" in med:
                ratios["events/s protobuf/kong-pdk"] = med[pb] / med[f"kong-pdk-{mode}"]
                ratios["events/s msgpack/kong-pdk"] = med[mp] / med[f"kong-pdk-{mode}"]
            summary["ratios"][f"{plugin} {mode}"] = ratios
            print(f"ratios {plugin:11} {mode:9} " + "  ".join(
                f"{k} {v:.2f}x" for k, v in ratios.items()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "protobuf.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
