"""Command line: the multi-plugin server and the single-file (dedicated) server.

Every flag of kong-pdk 0.36 is accepted, with the same single-dash long forms, so existing
kong.conf lines keep working.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from kongish_pdk import dump
from kongish_pdk import log as logsetup
from kongish_pdk._version import __version__
from kongish_pdk.errors import PluginLoadError
from kongish_pdk.plugin.source import PluginSource
from kongish_pdk.plugin.spec import PluginSpec, build_spec
from kongish_pdk.protocol import names as protocols
from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME
from kongish_pdk.runtime.runtime import FAIL_CLOSED, PASS, RuntimeOptions
from kongish_pdk.server.lifecycle import ParentWatch, die_with_parent
from kongish_pdk.server.listener import ListenerError
from kongish_pdk.workers import affinity, priority
from kongish_pdk.workers.base import Worker
from kongish_pdk.workers.processes import START_METHODS

log = logging.getLogger("kongish_pdk")

PROG = "kongish-pluginserver"
DEFAULT_PREFIX = "/usr/local/kong"
MULTI_SOCKET = "kongish_pluginserver.socket"


def _octal(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0600") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a permission mode")
    return mode


def _nice(text: str) -> int:
    try:
        steps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if steps not in priority.WORKER_NICE_RANGE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: workers can be 0 to {priority.LOWEST_WORKER_NICE} "
            "nice steps below the server, never above it")
    return steps


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
        return value

    return parse


def build_parser(dedicated: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``dedicated`` is the plugin name for a single-file server."""
    p = argparse.ArgumentParser(
        prog=os.path.basename(sys.argv[0]) if dedicated else PROG,
        description=(f"Serve the Python plugin {dedicated!r} to Kong" if dedicated else
                     "Serve Kong plugins written in Python (a drop-in for kong-pdk)."),
        allow_abbrev=False,
    )
    where = p.add_argument_group("socket")
    if not dedicated:
        p.add_argument("-d", "--plugins-directory", "-plugins-directory", metavar="DIR",
                       help="directory of plugins: *.py files and packages; names starting "
                            "with '_' are skipped, modules without class Plugin are helpers")
    where.add_argument("-p", "--kong-prefix", "-kong-prefix", metavar="PREFIX",
                       default=DEFAULT_PREFIX,
                       help=f"directory of the socket, Kong's prefix (default {DEFAULT_PREFIX})")
    default_socket = f"{dedicated}.socket" if dedicated else MULTI_SOCKET
    where.add_argument("--socket-name", "-socket-name", metavar="NAME", default=default_socket,
                       help=f"socket file name inside the prefix (default {default_socket}); "
                            "pluginserver_<name>_socket in kong.conf must name the same file")
    where.add_argument("--socket-mode", type=_octal, default=0o600, metavar="MODE",
                       help="permissions of the socket file (default 0600: only the user "
                            "Kong's workers run as; use 0666 when they run as another user)")
    where.add_argument("--listen-queue-size", type=int, default=4096, metavar="N",
                       help="listen() backlog (default 4096)")

    dumps = p.add_argument_group("describing plugins to Kong (query_cmd); print JSON and exit")
    if dedicated:
        dumps.add_argument("--dump", "-dump", action="store_true",
                           help="print this plugin's info (use as pluginserver_<name>_query_cmd)")
    else:
        dumps.add_argument("--dump-all-plugins", "--dump", "-dump", dest="dump_all",
                           action="store_true", help="print every plugin's info (Kong <= 3.8 "
                           "reads them all; Kong 3.9+ reads only the first)")
        dumps.add_argument("--dump-plugin-info", metavar="NAME",
                           help="print one plugin's info, as JSON: use as the query_cmd of each "
                                "pluginserver_names entry on Kong 3.9+")

    run = p.add_argument_group("running plugins")
    run.add_argument("--protocol", choices=protocols.CHOICES, default=protocols.MSGPACK,
                     help="what to speak to Kong: msgpack (MsgPack:1, like kong-pdk) or "
                          "protobuf (ProtoBuf:1, like go-pdk: an event runs on one connection, "
                          "and Kong answers a failing plugin with a 500; needs the protobuf "
                          "extra). --dump reports it, so Kong picks the same (default msgpack)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("-g", "--gevent", action="store_true",
                      help="run handlers as greenlets; the standard library is monkey-patched "
                           "before plugins load, so blocking libraries cooperate")
    mode.add_argument("-m", "--multiprocessing", action="store_true",
                      help="run handlers in worker processes (--workers), for CPU-bound plugins")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="threads mode: handler threads (default 512); -m: threads per worker")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="-m: worker processes (default: the number of CPUs this process "
                          "may use)")
    run.add_argument("--cpu-affinity", choices=affinity.CHOICES, default="auto",
                     help="auto pins each process that runs handlers to one CPU: the server "
                          "in threads mode (the last usable CPU), each worker with -m (the "
                          "usable CPUs in turn, like nginx's worker_cpu_affinity auto); one "
                          "GIL never uses more than one core, and pinned, its hand-offs stay "
                          "on one. gevent runs on one thread and is left alone. off leaves "
                          "placement to the kernel (default auto)")
    run.add_argument("--worker-nice", type=_nice, default=priority.DEFAULT_WORKER_NICE,
                     metavar="N",
                     help=f"-m: run the workers N nice steps (0-{priority.LOWEST_WORKER_NICE}) "
                          "below the server process, "
                          "which relays every PDK call between Kong and them, so that a "
                          "worker's long computation gives way to the relay and to Kong at "
                          f"once (default {priority.DEFAULT_WORKER_NICE}; 0 = the server's "
                          "priority)")
    run.add_argument("--start-method", choices=START_METHODS, default="forkserver",
                     help="-m: how worker processes start (default forkserver; plugins are "
                          "loaded again in each worker, so all three work)")
    style = run.add_mutually_exclusive_group()
    style.add_argument("--lua-style", action="store_true",
                       help="PDK calls return (value, error) tuples like kong-pdk's default")
    style.add_argument("--no-lua-style", action="store_true",
                       help="PDK calls return the value and raise PDKError (the default)")
    run.add_argument("--on-plugin-error", choices=(FAIL_CLOSED, PASS), default=FAIL_CLOSED,
                     help="when a handler raises: fail-closed answers kong.response.error(500) "
                          "in rewrite/access/response (exit(500) in preread); pass lets the "
                          "request continue (default fail-closed)")
    run.add_argument("--event-timeout", type=_positive(float), default=60.0, metavar="SECONDS",
                     help="stop an event that waits this long for Kong's next Step (Kong "
                          "aborted the request) or whose handler produces nothing (default 60)")
    run.add_argument("--instance-idle-timeout", type=_positive(float), default=60.0,
                     metavar="SECONDS", help="close instances unused this long; Kong restarts "
                     "them on demand (default 60, 0 = never)")
    run.add_argument("--max-frame-size", type=int, default=DEFAULT_MAX_FRAME, metavar="BYTES",
                     help=f"largest message accepted from Kong (default {DEFAULT_MAX_FRAME})")

    info = p.add_argument_group("logging and information")
    info.add_argument("-v", "--verbose", action="count", default=0,
                      help="debug logging (logs go to stderr; Kong shows them at its INFO level)")
    info.add_argument("--log-format", choices=("text", "json"), default="text",
                      help="text lines or one JSON object per line (default text)")
    info.add_argument("--version", "-version", action="version",
                      version=f"kongish-pluginserver {__version__}")
    return p


def _fail(message: str, status: int = 1) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def _make_worker(args: argparse.Namespace, source: PluginSource) -> Worker:
    if args.gevent:
        from kongish_pdk.workers.gevent import GeventWorker  # imports gevent only in -g mode

        return GeventWorker()
    if args.multiprocessing:
        from kongish_pdk.workers.processes import ProcessWorker

        return ProcessWorker(source, workers=args.workers, threads=args.threads,
                             start_method=args.start_method,
                             cpu_affinity=args.cpu_affinity, nice=args.worker_nice,
                             verbosity=args.verbose,
                             log_format=args.log_format,
                             call_check=protocols.call_check(args.protocol))
    from kongish_pdk.workers.threads import ThreadWorker

    return ThreadWorker(threads=args.threads, cpu_affinity=args.cpu_affinity)


def _serve(args: argparse.Namespace, source: PluginSource, parent: ParentWatch,
           load: Callable[[], list[PluginSpec]]) -> int:
    from kongish_pdk.server.app import ServerOptions, serve

    if args.protocol == protocols.PROTOBUF:
        _require_protobuf()
    worker = _make_worker(args, source)
    worker.prepare()  # before plugins are imported
    try:
        specs = load()
    except PluginLoadError as exc:
        _fail(f"cannot load plugins:\n{exc}")
    options = ServerOptions(
        socket_path=os.path.join(args.kong_prefix, args.socket_name),
        socket_mode=args.socket_mode,
        backlog=args.listen_queue_size,
        lua_style=args.lua_style,
        protocol=args.protocol,
        max_frame=args.max_frame_size,
        runtime=RuntimeOptions(
            on_plugin_error=args.on_plugin_error,
            event_timeout=args.event_timeout,
            instance_idle_timeout=args.instance_idle_timeout,
        ),
    )
    try:
        return serve(worker, specs, options, parent)
    except ListenerError as exc:
        _fail(str(exc))


def _require_protobuf() -> None:
    try:
        found = importlib.util.find_spec("google.protobuf") is not None
    except ImportError:  # no "google" namespace at all
        found = False
    if not found:
        _fail("--protocol protobuf needs the protobuf package: "
              "pip install 'kongish-pdk[protobuf]'")


def _dump(out: TextIO, specs: Sequence[PluginSpec], protocol: str) -> int:
    dump.write(out, dump.document(specs, protocols.protocol_name(protocol)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``kongish-pluginserver``: serve (or describe) every plugin of a directory."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:  # a subcommand for plugin authors, not a server mode
        from kongish_pdk.check import main as check

        return check(argv[1:])
    args = build_parser().parse_args(argv)
    parent = ParentWatch()
    out = dump.protect_stdout()
    logsetup.configure(args.verbose, args.log_format)
    if not args.plugins_directory:
        _fail("-d/--plugins-directory is required", status=2)
    directory = Path(args.plugins_directory).resolve()
    source = PluginSource(directory=str(directory))

    if args.dump_all or args.dump_plugin_info:
        try:
            specs = source.load()
        except PluginLoadError as exc:
            _fail(f"cannot load plugins:\n{exc}")
        if args.dump_plugin_info:
            chosen = [s for s in specs if s.name == args.dump_plugin_info]
            if not chosen:
                names = ", ".join(s.name for s in specs) or "none"
                _fail(f"no plugin named {args.dump_plugin_info!r} in {directory} "
                      f"(found: {names})")
            specs = chosen
        return _dump(out, specs, args.protocol)
    die_with_parent()
    return _serve(args, source, parent, source.load)


def start_dedicated_server(name: str, plugin: type, version: Any = None, priority: Any = 0,
                           schema: Any = None) -> NoReturn:
    """Run one plugin file as its own server (kong-pdk's ``start_dedicated_server``).

    End the plugin file with::

        if __name__ == "__main__":
            from kongish_pdk.cli import start_dedicated_server
            start_dedicated_server("py-hello", Plugin, version, priority, Schema)
    """
    args = build_parser(dedicated=name).parse_args()
    parent = ParentWatch()
    out = dump.protect_stdout()
    logsetup.configure(args.verbose, args.log_format)
    file = os.path.abspath(
        getattr(sys.modules.get(plugin.__module__), "__file__", None) or sys.argv[0])
    source = PluginSource(file=file, name=name, class_name=plugin.__name__, version=version,
                          priority=priority, schema=schema)

    def load() -> list[PluginSpec]:
        # This process already imported the file as __main__: use that class. Worker
        # processes (-m) import the file again through `source`.
        modtime = os.stat(file).st_mtime if os.path.exists(file) else 0.0
        return [build_spec(name, cls=plugin, version=version, priority=priority, schema=schema,
                           source=file, modtime=modtime)]

    if args.dump:
        try:
            specs = load()
        except PluginLoadError as exc:
            _fail(f"cannot load plugin:\n{exc}")
        raise SystemExit(_dump(out, specs, args.protocol))
    die_with_parent()
    raise SystemExit(_serve(args, source, parent, load))


if __name__ == "__main__":
    raise SystemExit(main())
