"""Instructions per event under callgrind: a noise-free figure on a shared machine.

    .venv/bin/python bench/instructions.py [--small 300 --large 1300]

Each server runs under ``valgrind --tool=callgrind`` twice, serving N1 and then N2 hello
events (concurrency 16, same load generator); the difference of the two instruction totals
divided by N2 - N1 is the cost of one event with start-up and shutdown cancelled out.
It counts user-space instructions only: kernel time and thread switching, which the
events/s and CPU-time figures of ``run.py`` include, are not in it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from loadgen import LoadGen
from servers import PLUGINS, ROOT

from support.incumbent import kong_pdk_venv, server_command, wait_for_socket

TOTAL = re.compile(r"Collected : (\d+)")


def _command(kind: str, prefix: Path) -> tuple[list[str], str]:
    if kind == "floor":
        sock = str(prefix / "floor.sock")
        return [sys.executable, str(BENCH / "floor_server.py"), sock], sock
    if kind.startswith("kong-pdk"):
        flags = ["-g"] if kind.endswith("gevent") else []
        cmd = server_command(kong_pdk_venv(), PLUGINS, prefix, *flags)
        return cmd, str(prefix / "python_pluginserver.sock")
    flags = ["-g"] if kind.endswith("gevent") else []
    return ([sys.executable, "-m", "kongish_pdk.cli", "-d", str(PLUGINS), "-p", str(prefix),
             *flags], str(prefix / "kongish_pluginserver.socket"))


def instructions(kind: str, events: int) -> int:
    prefix = Path(tempfile.mkdtemp(prefix="callgrind-"))
    command, sock = _command(kind, prefix)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}/cg.%p", *command],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=prefix,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_socket(Path(sock), proc, timeout=300)  # start-up under valgrind takes seconds
        load = LoadGen(sock, 16)
        try:
            iid = load.start_instance("bench_hello", {})
            load.drive(iid, "access", events=events)
        finally:
            load.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
        raise
    totals = [int(n) for n in TOTAL.findall(err)]
    if not totals:
        raise RuntimeError(f"no callgrind total for {kind}:\n{err[-2000:]}")
    return sum(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1300)
    parser.add_argument("kinds", nargs="*", default=[
        "floor", "kongish threads", "kongish gevent", "kong-pdk threads", "kong-pdk gevent"])
    args = parser.parse_args()
    print("| server | instructions per event | per RPC | vs floor |\n|---|---:|---:|---:|")
    floor = None
    for kind in args.kinds:
        per_event = (instructions(kind, args.large) - instructions(kind, args.small)) / (
            args.large - args.small)
        floor = per_event if kind == "floor" else floor
        versus = f"{per_event / floor:.2f}x" if floor else ""
        print(f"| {kind} | {per_event:,.0f} | {per_event / 4:,.0f} | {versus} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
