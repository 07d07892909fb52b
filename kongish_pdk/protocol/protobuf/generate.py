"""Writes ``pluginsocket_pb2.py`` from ``pluginsocket.proto``.

Run ``python -m kongish_pdk.protocol.protobuf.generate`` after editing the ``.proto`` (it
needs ``grpcio-tools``, which bundles ``protoc``); ``--check`` exits non-zero when the
checked-in module is stale. The tests run the same check.

protoc's Python output begins with a guard that refuses any protobuf runtime older than the
protoc that wrote it, which would tie users to whatever grpcio-tools we happened to run. The
code after the guard only uses the descriptor ``builder`` API, stable since protobuf 3.20, so
the guard is removed: the module loads on every protobuf the ``protobuf`` extra allows
(checked with 4.25, 5.29 and 7.x). Staleness is judged on the serialised descriptor, not on
protoc's version banner; the module also records the .proto's SHA-256, so a test can tell
"edited but not regenerated" even where grpcio-tools is not installed. No ``.pyi`` is
written: ``messages.py`` types the module as ``Any``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the directory that holds the kongish_pdk package
PROTO = HERE / "pluginsocket.proto"
MODULE = HERE / "pluginsocket_pb2.py"

_GUARD = re.compile(
    r"from google\.protobuf import runtime_version as _runtime_version\n"
    r"|_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:.*\n)*?\)\n"
)
_VERSION_BANNER = re.compile(r"^# Protobuf Python Version: .*\n", re.MULTILINE)
_NOTE = (
    "# Regenerate with: python -m kongish_pdk.protocol.protobuf.generate\n"
    "# (protoc's runtime-version guard is removed: see generate.py)\n"
    "# pluginsocket.proto sha256: {digest}\n"
)
_DIGEST = re.compile(r"^# pluginsocket.proto sha256: ([0-9a-f]{64})$", re.MULTILINE)


def proto_digest() -> str:
    return hashlib.sha256(PROTO.read_bytes()).hexdigest()


def recorded_digest() -> str | None:
    """The .proto digest the checked-in module was generated from."""
    found = _DIGEST.search(MODULE.read_text("utf-8")) if MODULE.exists() else None
    return found.group(1) if found else None


def run_protoc(out_dir: Path) -> str:
    """protoc's Python module for the .proto, post-processed."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("regenerating needs grpcio-tools: pip install grpcio-tools") from None
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    relative = PROTO.relative_to(ROOT)
    status = protoc.main([
        "grpc_tools.protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
        str(relative),
    ])
    if status != 0:
        raise SystemExit(f"protoc failed ({status}) on {relative}")
    module = Path(f"{out_dir / relative.with_suffix('')}_pb2.py").read_text(encoding="utf-8")
    module, found = _GUARD.subn("", module)
    if found not in (0, 2):
        raise SystemExit("unexpected protoc output: cannot remove its runtime-version guard")
    note = _NOTE.format(digest=proto_digest())
    return _VERSION_BANNER.sub(lambda _: note, module)


def descriptor_of(module_source: str) -> bytes:
    """The serialised FileDescriptorProto embedded in a generated module."""
    found = re.search(r"AddSerializedFile\((b'.*?')\)\n", module_source, re.DOTALL)
    if found is None:
        raise ValueError("no serialised descriptor in the generated module")
    value = ast.literal_eval(found.group(1))  # a bytes literal protoc wrote
    if not isinstance(value, bytes):
        raise ValueError("the serialised descriptor is not a bytes literal")
    return value


def is_stale() -> bool:
    """True when the checked-in module does not describe the .proto as it is now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = run_protoc(Path(tmp))
    if not MODULE.exists() or recorded_digest() != proto_digest():
        return True
    return descriptor_of(MODULE.read_text("utf-8")) != descriptor_of(fresh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the checked-in module is stale; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        if is_stale():
            print(f"stale: {MODULE.name} does not match {PROTO.name}; run "
                  "python -m kongish_pdk.protocol.protobuf.generate", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        module = run_protoc(Path(tmp))
    MODULE.write_text(module, encoding="utf-8")
    print(f"wrote {MODULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
