"""Side-by-side benchmark: kongish-pdk vs kong-pdk 0.36 (and the floor), same client, same run.

    .venv/bin/python bench/run.py                 # everything (about 6 minutes)
    .venv/bin/python bench/run.py hello cpu       # some scenarios
    .venv/bin/python bench/run.py --rounds 5 --seconds 4
    .venv/bin/python bench/run.py cpu --cpu-ms 1.5   # the CPU-bound plugin doing 1.5 ms

Each round starts every server afresh, warms it up, then measures events/s, latency and the
server's own CPU time per event (utime+stime from /proc, its worker processes included),
and how much of the host's CPU time the hypervisor gave other guests meanwhile ("steal":
a round with much of it says more about the neighbours than about the server). Servers
alternate within a round and the tables show medians over rounds, because this machine is
shared and noisy. kong-pdk 0.36 is installed in its own venv under .cache/.

The cpu scenario's plugin loops a number of times set per run: its loop is timed here first
so that an event's work takes ``--cpu-ms`` (2 ms, the issue's figure) on this machine, as
printed above its table. (Before, a fixed 17,500 rounds took 1.1-1.6 ms here.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadGen
from servers import PLUGINS, Running, floor, incumbent, ours

from support.procstat import host_cpu_ticks, stolen_since

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    plugin: str
    rpcs: int  # RPCs per event (HandleEvent + one Step per non-terminal PDK call)
    concurrency: int
    servers: tuple[tuple[str, Callable[[], Running]], ...]
    batch: int | None = None  # measure one batch of N events (wall time) instead of a rate
    note: str = ""
    # Two of our own servers whose events/s a target compares: also reported round by round,
    # since on a noisy machine the ratio of two medians can hide how much single rounds vary.
    paired: tuple[str, str] | None = None
    # The plugin's instance config for a run, from --cpu-ms (None: an empty config).
    configure: Callable[[float], dict[str, Any]] | None = None


def calibrate_work(target_ms: float) -> dict[str, Any]:
    """``bench_cpu``'s config for ``target_ms`` of its pure-Python loop per event on this
    machine, timed here (median of 100 after a warm-up): the issue's "about 2 ms" holds on
    any CPU, instead of a fixed loop count that took 1.1-1.6 ms on this one."""
    sys.path.insert(0, str(PLUGINS))
    from bench_cpu import work

    probe = 20000
    for _ in range(5):
        work(probe)
    times = []
    for _ in range(100):
        start = time.perf_counter()
        work(probe)
        times.append(time.perf_counter() - start)
    rounds = round(probe * target_ms / 1000 / statistics.median(times))
    print(f"bench_cpu: {rounds} rounds of its loop = {target_ms:g} ms here", file=sys.stderr)
    return {"rounds": rounds}


def _ours(mode: str, *flags: str) -> Callable[[], Running]:
    return lambda: ours(mode, *flags)


def _incumbent(mode: str) -> Callable[[], Running]:
    return lambda: incumbent(mode)


SCENARIOS = {
    "hello": Scenario("hello", "bench_hello", 4, 16, (
        ("floor", floor),
        ("kongish threads", _ours("threads")),
        ("kong-pdk threads", _incumbent("threads")),
        ("kongish gevent", _ours("gevent")),
        ("kong-pdk gevent", _incumbent("gevent")),
        ("kongish processes", _ours("processes", "--workers", "2")),
        ("kong-pdk processes", _incumbent("processes")),
    ), note="4-RPC hello plugin, concurrency 16"),
    "ten": Scenario("ten", "bench_ten", 11, 16, (
        ("kongish threads", _ours("threads")),
        ("kong-pdk threads", _incumbent("threads")),
        ("kongish gevent", _ours("gevent")),
        ("kong-pdk gevent", _incumbent("gevent")),
    ), note="10 PDK calls of several kinds per event (11 RPCs), concurrency 16"),
    "cpu": Scenario("cpu", "bench_cpu", 3, 8, (
        ("kongish threads", _ours("threads")),
        ("kongish processes", _ours("processes", "--workers", "2")),
        # The same, with the workers at the server's priority: what --worker-nice buys.
        ("kongish nice-0 processes", _ours("processes", "--workers", "2", "--worker-nice", "0")),
        # One worker more than the CPUs: fills a CPU while a worker's events wait for Kong.
        ("kongish 3-workers processes", _ours("processes", "--workers", "3")),
        ("kong-pdk processes", _incumbent("processes")),
        ("kong-pdk threads", _incumbent("threads")),
    ), note="about 2 ms of pure-Python work per event, concurrency 8",
        paired=("kongish processes", "kongish threads"), configure=calibrate_work),
    "slow": Scenario("slow", "bench_slow", 3, 64, (
        ("kongish threads", _ours("threads")),
        ("kongish gevent", _ours("gevent")),
        ("kong-pdk threads", _incumbent("threads")),
        ("kong-pdk gevent", _incumbent("gevent")),
    ), batch=64, note="64 concurrent events, each sleeping 0.2 s before and after its first "
                      "PDK call; wall time for the batch"),
}


@dataclass
class Sample:
    rate: float  # events/s
    p50_ms: float
    p99_ms: float
    cpu_ms_per_event: float
    wall_s: float
    steal: float  # share of the host's CPU time other guests took meanwhile (0-1)


def measure(scenario: Scenario, start: Callable[[], Running], seconds: float,
            config: dict[str, Any]) -> Sample:
    server = start()
    try:
        load = LoadGen(server.socket, scenario.concurrency)
        try:
            iid = load.start_instance(scenario.plugin, config)
            if scenario.batch:
                load.drive(iid, "access", events=scenario.concurrency)  # threads warm up
                cpu0, host0 = server.cpu(), host_cpu_ticks()
                result = load.drive(iid, "access", events=scenario.batch)
            else:
                load.drive(iid, "access", seconds=min(1.0, seconds / 2))
                cpu0, host0 = server.cpu(), host_cpu_ticks()
                result = load.drive(iid, "access", seconds=seconds)
            cpu, steal = server.cpu() - cpu0, stolen_since(host0)
        finally:
            load.close()
    finally:
        server.stop()
    if result.errors:
        raise RuntimeError(f"{server.name}: {result.errors} errors")
    return Sample(result.rate, result.percentile(50) * 1000, result.percentile(99) * 1000,
                  cpu / max(result.events, 1) * 1000, result.seconds, steal)


def run(scenario: Scenario, rounds: int, seconds: float,
        config: dict[str, Any]) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {name: [] for name, _ in scenario.servers}
    for r in range(rounds):
        order = scenario.servers if r % 2 == 0 else tuple(reversed(scenario.servers))
        for name, start in order:
            samples[name].append(measure(scenario, start, seconds, config))
            sample = samples[name][-1]
            print(f"  round {r + 1}: {name:24s} {sample.rate:9.0f} ev/s  "
                  f"{sample.steal:4.0%} of the host stolen", file=sys.stderr, flush=True)
    return samples


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def table(scenario: Scenario, samples: dict[str, list[Sample]], config: dict[str, Any]) -> str:
    head = (f"### {scenario.name}: {scenario.note}\n\n"
            + (f"Plugin config: `{json.dumps(config)}`\n\n" if config else "")
            + "| server | events/s | p50 ms | p99 ms | server CPU ms/event | CPU µs/RPC |"
            + (" batch wall s |" if scenario.batch else "") + " steal | vs kong-pdk (same mode) |\n"
            "|---|---:|---:|---:|---:|---:|" + ("---:|" if scenario.batch else "") + "---:|---|\n")
    rows = []
    for name, runs in samples.items():
        rate, cpu = median(runs, "rate"), median(runs, "cpu_ms_per_event")
        mode = name.split()[-1]
        rival = samples.get(f"kong-pdk {mode}")
        versus = ""
        if rival and not name.startswith("kong-pdk"):
            if scenario.batch:
                versus = f"{median(rival, 'wall_s') / median(runs, 'wall_s'):.1f}x faster"
            else:
                versus = (f"{rate / median(rival, 'rate'):.2f}x events/s, "
                          f"{cpu / median(rival, 'cpu_ms_per_event'):.2f}x CPU/event")
        if name == "floor" or (name.startswith("kongish") and "floor" in samples):
            floor_cpu = median(samples["floor"], "cpu_ms_per_event")
            versus += f"{'; ' if versus else ''}{cpu / floor_cpu:.2f}x floor CPU"
        rows.append(
            f"| {name} | {rate:.0f} | {median(runs, 'p50_ms'):.2f} | {median(runs, 'p99_ms'):.2f}"
            f" | {cpu:.3f} | {cpu / scenario.rpcs * 1000:.1f} |"
            + (f" {median(runs, 'wall_s'):.2f} |" if scenario.batch else "")
            + f" {median(runs, 'steal'):.0%} | {versus} |")
    return head + "\n".join(rows) + "\n" + paired_ratios(scenario, samples)


def paired_ratios(scenario: Scenario, samples: dict[str, list[Sample]]) -> str:
    """The scenario's pair compared within each round (both measured minutes apart)."""
    if scenario.paired is None:
        return ""
    top, bottom = scenario.paired
    ratios = [a.rate / b.rate for a, b in zip(samples[top], samples[bottom], strict=True)]
    of_medians = median(samples[top], "rate") / median(samples[bottom], "rate")
    return (f"\n{top} / {bottom} events/s: {of_medians:.2f}x by medians; round by round "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x)\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu-ms", type=float, default=2.0,
                        help="pure-Python work per event of the cpu scenario (default 2)")
    args = parser.parse_args()
    chosen = args.scenarios or list(SCENARIOS)
    report = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds, "
              f"{args.seconds:g} s per measurement; medians.\n"]
    for name in chosen:
        scenario = SCENARIOS[name]
        print(f"{name}: {scenario.note}", file=sys.stderr, flush=True)
        config = scenario.configure(args.cpu_ms) if scenario.configure else {}
        report.append(table(scenario, run(scenario, args.rounds, args.seconds, config),
                            config))
    text = "\n".join(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
