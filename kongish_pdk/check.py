"""``kongish-pluginserver check DIR|FILE``: a plugin exactly as Kong will see it, plus lints.

For every plugin it prints the ``--dump-plugin-info`` document Kong reads (name, phases,
priority, version, schema) and what would go wrong later, found without starting anything:

* errors: a version Kong refuses, a Schema Kong's metaschema refuses, a phase method with the
  wrong signature or ``async def`` (it would never run), a ``kong.*`` call that is not in the
  PDK (a typo), a PDK call in a phase where Kong forbids it;
* warnings: methods Kong cannot call (``header_filter``...), misspelt phase names
  (``acess``), log-phase calls that need the live request, and with ``--gevent`` imports
  whose I/O blocks the whole gevent hub.

Exit status 1 if there is an error (or, with ``--strict``, a warning).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import inspect
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kongish_pdk import dump
from kongish_pdk.errors import PluginLoadError
from kongish_pdk.pdk.table import BY_NAME, PHASES, namespaces
from kongish_pdk.plugin.loader import candidates, load_plugin_file
from kongish_pdk.plugin.schema import config_record
from kongish_pdk.plugin.spec import UNREACHABLE_PHASES, PluginSpec
from kongish_pdk.protocol.names import MSGPACK, protocol_name

# Libraries whose I/O happens in C, outside gevent's monkey-patching: one call blocks every
# greenlet of the server. The advice says what to do instead.
GEVENT_BLOCKING: dict[str, str] = {
    "psycopg2": "use psycopg (3) or patch it with psycogreen",
    "MySQLdb": "use PyMySQL (pure Python)",
    "mysqlclient": "use PyMySQL (pure Python)",
    "grpc": "grpcio does not cooperate with gevent unless grpc.experimental.gevent is "
            "initialised; or run in threads mode",
    "confluent_kafka": "librdkafka blocks; run in threads mode",
    "cx_Oracle": "run in threads mode",
    "oracledb": "use thin mode or threads mode",
    "pycurl": "use a pure-Python HTTP client (requests, httpx)",
    "zmq": "use zmq.green",
    "asyncio": "an asyncio loop inside a greenlet blocks the hub; call async code from a "
               "thread or use gevent-native libraries",
    "multiprocessing": "processes started from greenlets inherit the hub; use -m instead",
}

_PDK_NAMESPACES = frozenset(namespaces())


@dataclass
class Finding:
    level: str  # "error" or "warning"
    message: str
    line: int | None = None


@dataclass
class Report:
    name: str
    source: str  # the file the source lints read: where the Plugin class is defined
    dump: dict[str, Any] | None = None  # what --dump-plugin-info prints (None: not loadable)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == "warning")


# ---------------------------------------------------------------------- static lints

def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _plugin_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name),
                None)


def lint_source(source: str, gevent: bool, class_name: str) -> Iterator[Finding]:
    """Lints that read the plugin's code: PDK calls per phase, imports, phase names.

    ``class_name``: the name the Plugin class is defined under in ``source``.
    """
    tree = ast.parse(source)
    if gevent:
        yield from _gevent_imports(tree)
    cls = _plugin_class(tree, class_name)
    if cls is None:
        return
    for item in cls.body:
        if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if item.name in PHASES:
            yield from _lint_phase(item)
        elif not item.name.startswith("_") and item.name not in UNREACHABLE_PHASES:
            close = difflib.get_close_matches(item.name, PHASES, n=1, cutoff=0.75)
            if close:
                yield Finding("warning", f"Plugin.{item.name} looks like the {close[0]} phase "
                              f"but is not named so: Kong will never call it", item.lineno)


def _lint_phase(method: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[Finding]:
    phase = method.name
    if isinstance(method, ast.AsyncFunctionDef):
        yield Finding("error", f"Plugin.{phase} is `async def`: phase methods are called "
                      f"synchronously, so its body would never run", method.lineno)
    args = method.args.args
    if len(args) != 2 or method.args.vararg or method.args.kwonlyargs:
        yield Finding("error", f"Plugin.{phase} must take exactly one argument besides self "
                      f"(the kong PDK object)", method.lineno)
        return
    kong = args[1].arg
    for node in ast.walk(method):
        if not isinstance(node, ast.Call):
            continue
        parts = _chain(node.func)
        if not parts or parts[0] != kong or len(parts) < 2:
            continue
        name = ".".join(["kong", *parts[1:]])
        if parts[1:] == ["raw_call"]:
            continue
        yield from _lint_call(name, phase, node.lineno)


def _lint_call(name: str, phase: str, line: int) -> Iterator[Finding]:
    fn = BY_NAME.get(name)
    if fn is None:
        if name in _PDK_NAMESPACES:
            return
        namespace, _, short = name.rpartition(".")
        known = [f.short_name for f in BY_NAME.values() if f.namespace == namespace]
        close = difflib.get_close_matches(short, known, n=1, cutoff=0.6)
        hint = f"; did you mean {namespace}.{close[0]}?" if close else ""
        yield Finding("error", f"{name} is not a PDK function{hint}", line)
        return
    if phase not in fn.phases:
        allowed = ", ".join(fn.allowed_phases)
        yield Finding("error", f"{name} cannot be called in the {phase} phase (Kong: only in: "
                      f"{allowed or 'none'})", line)
    elif phase == "log" and fn.log_unavailable:
        yield Finding("warning", f"{name} needs the live request, which the log phase of an "
                      f"external plugin no longer has (Kong runs it in a timer): use "
                      f"kong.log.serialize() or save it in kong.ctx.shared earlier", line)


def _gevent_imports(tree: ast.Module) -> Iterator[Finding]:
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for module in names:
            top = module.split(".")[0]
            if module == "zmq.green" or top not in GEVENT_BLOCKING:
                continue
            yield Finding("warning", f"gevent mode: {module} blocks the gevent hub "
                          f"({GEVENT_BLOCKING[top]})", getattr(node, "lineno", None))


def lint_class(spec: PluginSpec) -> Iterator[Finding]:
    """Lints that need the imported class."""
    for warning in spec.warnings:
        yield Finding("warning", warning)
    try:
        signature = inspect.signature(spec.cls)
        if spec.accepts_meta:
            signature.bind({}, meta=None)
        else:
            signature.bind({})
    except TypeError as exc:
        yield Finding("error", f"Plugin(config) cannot be called ({exc}): Kong's StartInstance "
                      f"would fail")
    except ValueError:
        pass


# ---------------------------------------------------------------------- running

def check_plugin(path: Path, gevent: bool) -> Report | None:
    """The report of one candidate, imported as the server imports it; None for a helper
    module (no ``Plugin`` after import: the server does not serve it either)."""
    name = path.name if path.is_dir() else path.stem
    source = path / "__init__.py" if path.is_dir() else path
    class_name = "Plugin"
    report = Report(name, str(source))
    try:
        spec = load_plugin_file(path)
        if spec is None:
            return None
    except PluginLoadError as exc:
        report.findings.append(Finding("error", exc.message))
    else:
        report.dump = dump.document([spec], protocol_name(MSGPACK))
        report.findings.extend(lint_class(spec))
        # Lint where the class is written (a package may import it from handler.py).
        with contextlib.suppress(TypeError):
            defined_in = inspect.getsourcefile(spec.cls)
            if defined_in:
                source, class_name = Path(defined_in), spec.cls.__name__
                report.source = str(source)
    try:  # the source lints work even when the import failed
        text = source.read_text(encoding="utf-8")
        report.findings.extend(lint_source(text, gevent, class_name))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        report.findings.append(Finding("warning", f"could not read the source to lint it: "
                                       f"{exc}"))
    return report


def targets(path: Path) -> list[Path]:
    if path.is_dir() and not (path / "__init__.py").is_file():
        return [c.path.parent if c.path.name == "__init__.py" else c.path
                for c in candidates(path)]
    return [path]


def render_text(report: Report) -> str:
    lines = [f"{report.name}  ({report.source})"]
    if report.dump is not None:
        info = report.dump["Plugins"][0]
        lines.append(f"  version {info['Version']}, priority {info['Priority']}, "
                     f"phases: {', '.join(info['Phases'])}")
        config = config_record(info["Schema"]) or {}
        for entry in config.get("fields", []):
            ((field_name, spec),) = entry.items()
            extras = {k: v for k, v in spec.items() if k not in ("type", "fields", "elements",
                                                                  "keys", "values")}
            lines.append(f"  config.{field_name}: {spec['type']}"
                         + (f" {json.dumps(extras)}" if extras else ""))
        lines.append("  dump: " + json.dumps(report.dump, separators=(",", ":")))
    for finding in report.findings:
        where = f"line {finding.line}: " if finding.line else ""
        lines.append(f"  {finding.level}: {where}{finding.message}")
    if not report.findings:
        lines.append("  ok")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kongish-pluginserver check",
        description="Show plugins exactly as Kong will see them and lint common mistakes.")
    p.add_argument("path", help="a plugin directory (as given to -d), or one plugin file "
                                "or package")
    p.add_argument("-g", "--gevent", action="store_true",
                   help="also flag libraries that block the gevent hub (for servers run with -g)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        print(f"kongish-pluginserver check: {path} does not exist", file=sys.stderr)
        return 2
    try:
        found = targets(path)
    except PluginLoadError as exc:
        print(f"kongish-pluginserver check: {exc}", file=sys.stderr)
        return 1
    out = dump.protect_stdout()  # what plugins print while importing goes to stderr
    reports = [r for r in (check_plugin(t, args.gevent) for t in found) if r is not None]
    if args.json:
        out.write(json.dumps([{**asdict(r), "errors": r.errors, "warnings": r.warnings}
                              for r in reports], indent=2) + "\n")
    else:
        out.write(("\n\n".join(render_text(r) for r in reports) or f"no plugins in {path}")
                  + "\n")
        errors = sum(r.errors for r in reports)
        warnings = sum(r.warnings for r in reports)
        out.write(f"\n{len(reports)} plugin(s), {errors} error(s), {warnings} warning(s)\n")
    out.flush()
    failed = any(r.errors for r in reports) or (args.strict and any(r.warnings for r in reports))
    return 1 if failed else 0
