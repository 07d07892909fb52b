"""Instructions per event under callgrind: a noise-free figure on a shared machine.

    .venv/bin/python bench/instructions.py [--small 300 --large 1300]
    .venv/bin/python bench/instructions.py --plugin bench_ten "kongish threads" \
        "kongish threads protobuf"

Each server runs under ``valgrind --tool=callgrind`` twice, serving N1 and then N2 events of
``--plugin`` (concurrency 16; loadgen.py's client for MsgPack:1, pb_loadgen.py's for a kind
ending in " protobuf"); the difference of the two instruction totals
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
from pb_loadgen import ProtoBufLoad
from servers import OURS_FLAGS, PLUGINS, ROOT

from support.incumbent import (
    MODE_FLAGS,
    kong_pdk_venv,
    server_command,
    socket_path,
    wait_for_socket,
)

TOTAL = re.compile(r"Collected : (\d+)")
RPCS = {"bench_hello": 4, "bench_ten": 11}  # per event: HandleEvent + one per PDK answer
PROTOBUF = " protobuf"  # a kind ending so ("kongish threads protobuf") speaks ProtoBuf:1


def _command(kind: str, prefix: Path) -> tuple[list[str], str]:
    if kind == "floor":
        sock = str(prefix / "floor.sock")
        return [sys.executable, str(BENCH / "floor_server.py"), sock], sock
    protocol = ["--protocol", "protobuf"] if kind.endswith(PROTOBUF) else []
    mode = kind.removesuffix(PROTOBUF).rsplit(maxsplit=1)[-1]  # "kong-pdk gevent" -> "gevent"
    if kind.startswith("kong-pdk"):
        cmd = server_command(kong_pdk_venv(), PLUGINS, prefix, *MODE_FLAGS[mode])
        return cmd, str(socket_path(prefix))
    return ([sys.executable, "-m", "kongish_pdk.cli", "-d", str(PLUGINS), "-p", str(prefix),
             *OURS_FLAGS[mode], *protocol], str(prefix / "kongish_pluginserver.socket"))


def _drive(kind: str, sock: str, plugin: str, events: int) -> None:
    """Run exactly ``events`` events of ``plugin``, 16 at a time, in the kind's protocol."""
    if kind.endswith(PROTOBUF):
        pb_load = ProtoBufLoad(sock, 16)
        try:
            pb_load.start_instance(plugin, {})
            if pb_load.run_events(events) != events:
                raise RuntimeError(f"{kind}: {pb_load.errors} events failed")
        finally:
            pb_load.close()
        return
    load = LoadGen(sock, 16)
    try:
        iid = load.start_instance(plugin, {})
        if (errors := load.drive(iid, "access", events=events).errors):
            raise RuntimeError(f"{kind}: {errors} events failed")
    finally:
        load.close()


def instructions(kind: str, events: int, plugin: str = "bench_hello") -> int:
    prefix = Path(tempfile.mkdtemp(prefix="callgrind-"))
    command, sock = _command(kind, prefix)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}/cg.%p", *command],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=prefix,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        # start-up under valgrind takes seconds
        wait_for_socket(Path(sock), proc, 300, f"{kind} under valgrind")
        _drive(kind, sock, plugin, events)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    except BaseException as exc:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        err = ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            _, err = proc.communicate(timeout=30)
        if isinstance(exc, Exception):  # an interrupt stays one
            raise RuntimeError(f"{exc}\nvalgrind's stderr ends with:\n{err[-2000:]}") from exc
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
    parser.add_argument("--plugin", choices=sorted(RPCS), default="bench_hello")
    parser.add_argument("kinds", nargs="*", default=[
        "floor", "kongish threads", "kongish gevent", "kong-pdk threads", "kong-pdk gevent"])
    args = parser.parse_args()
    print("| server | instructions per event | per RPC | vs floor |\n|---|---:|---:|---:|")
    floor = None
    rpcs = RPCS[args.plugin]
    for kind in args.kinds:  # all checked before minutes under valgrind
        if kind == "floor" and args.plugin != "bench_hello":
            parser.error("the floor server answers bench_hello's calls only")
        if kind.startswith("kong-pdk") and kind.endswith(PROTOBUF):
            parser.error("kong-pdk speaks MsgPack:1 only")
    for kind in args.kinds:
        per_event = (instructions(kind, args.large, args.plugin)
                     - instructions(kind, args.small, args.plugin)) / (args.large - args.small)
        floor = per_event if kind == "floor" else floor
        versus = f"{per_event / floor:.2f}x" if floor else ""
        print(f"| {kind} | {per_event:,.0f} | {per_event / rpcs:,.0f} | {versus} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
