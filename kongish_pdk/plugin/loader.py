"""Finds and imports the plugins of a directory (``-d DIR``).

Every ``*.py`` file and every package (folder with ``__init__.py``) is imported, in sorted
order, as a submodule of a private package (``kongish_pdk_plugins``), so a plugin called
``json.py`` cannot replace the standard library's ``json``. Modules without ``Plugin`` are
helpers. A plugin's ``import helpers`` is served by a finder placed *last* on
``sys.meta_path``: it only answers for names nothing else provides (so no file here can
shadow the standard library or an installed package), it works whatever the listing order,
and it returns the same module object as the private import, so a helper runs once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kongish_pdk.errors import PluginLoadError
from kongish_pdk.plugin.spec import PluginSpec, build_spec

log = logging.getLogger("kongish_pdk.plugin")

PACKAGE = "kongish_pdk_plugins"


@dataclass(frozen=True)
class Candidate:
    name: str  # module stem, which is also the plugin name
    path: Path  # the .py file, or the package's __init__.py


def candidates(directory: Path) -> list[Candidate]:
    """Importable entries of ``directory``, sorted; ``_``- and ``.``-prefixed names skipped."""
    found: dict[str, Candidate] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            name, path = entry.stem, entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            name, path = entry.name, entry / "__init__.py"
        else:
            continue
        if name in found:
            raise PluginLoadError(
                str(path), f"both {found[name].path} and {path} are named {name!r}"
            )
        found[name] = Candidate(name, path)
    return list(found.values())


class _AliasLoader(importlib.abc.Loader):
    """Loads ``helpers`` as the already-importable ``kongish_pdk_plugins.helpers``."""

    def __init__(self, private_name: str) -> None:
        self.private_name = private_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self.private_name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None  # already executed under its private name


class _SiblingFinder(importlib.abc.MetaPathFinder):
    """Resolves top-level imports of modules in the plugin directory (see module doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None or "." in fullname or fullname.startswith("_"):
            return None
        file = self.directory / f"{fullname}.py"
        package = self.directory / fullname / "__init__.py"
        if not (file.is_file() or package.is_file()):
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(f"{PACKAGE}.{fullname}"))


def _install_package(directory: Path) -> None:
    package = sys.modules.get(PACKAGE)
    if package is None:
        package = types.ModuleType(PACKAGE, "plugins loaded by kongish-pdk")
        package.__path__ = []
        sys.modules[PACKAGE] = package
    if str(directory) not in package.__path__:
        package.__path__.append(str(directory))
        sys.meta_path.append(_SiblingFinder(directory))


def _import(candidate: Candidate) -> types.ModuleType:
    try:
        return importlib.import_module(f"{PACKAGE}.{candidate.name}")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise PluginLoadError(str(candidate.path), f"import failed:\n{detail}") from None


def _import_file(path: str | os.PathLike[str]) -> tuple[Candidate, types.ModuleType]:
    """Import one ``.py`` file or package folder as the server would, Plugin or helper.

    Its folder is set up exactly as ``load_directory`` does (so its sibling helpers import),
    but no other module of the folder is imported.
    """
    target = Path(path).resolve()
    if target.is_dir():
        candidate = Candidate(target.name, target / "__init__.py")
    else:
        candidate = Candidate(target.stem, target)
    if not candidate.path.is_file():
        raise PluginLoadError(str(target), "not a plugin file (.py) or package folder")
    _install_package(target.parent)
    return candidate, _import(candidate)


def load_file(path: str | os.PathLike[str]) -> PluginSpec:
    """Import one plugin (a ``.py`` file or a package folder) as the server would serve it.

    See :func:`_import_file`. Used by the testing kit.
    """
    spec = load_plugin_file(path)
    if spec is None:
        raise PluginLoadError(str(path), "defines no class Plugin")
    return spec


def load_plugin_file(path: str | os.PathLike[str]) -> PluginSpec | None:
    """Like :func:`load_file`, but None for a helper module (no ``Plugin`` after import), which
    a plugin directory may hold and the server does not serve."""
    return _spec_of(*_import_file(path))


def _spec_of(candidate: Candidate, module: types.ModuleType) -> PluginSpec | None:
    """The spec of an imported module that defines ``Plugin``; None for a helper module."""
    if not hasattr(module, "Plugin"):
        return None
    source = str(candidate.path)
    return build_spec(
        name=candidate.name,
        cls=module.Plugin,
        version=getattr(module, "version", None),
        priority=getattr(module, "priority", 0),
        schema=getattr(module, "Schema", None),
        source=source,
        modtime=os.stat(source).st_mtime,
    )


def load_directory(directory: str | os.PathLike[str]) -> list[PluginSpec]:
    """Import every plugin of ``directory``; raise one PluginLoadError listing all failures."""
    path = Path(directory).resolve()
    if not path.is_dir():
        raise PluginLoadError(str(path), "plugin directory does not exist or is not a directory")
    _install_package(path)
    specs: list[PluginSpec] = []
    errors: list[PluginLoadError] = []
    for candidate in candidates(path):
        try:
            spec = _spec_of(candidate, _import(candidate))
            if spec is None:
                log.debug("%s: no Plugin class, treated as a helper module", candidate.path)
                continue
            specs.append(spec)
        except PluginLoadError as exc:
            errors.append(exc)
    if errors:
        raise PluginLoadErrors(errors)
    return specs


class PluginLoadErrors(PluginLoadError):
    """Several plugins failed; the message lists each one."""

    def __init__(self, errors: list[PluginLoadError]) -> None:
        self.errors = errors
        text = "\n".join(str(e) for e in errors)
        super().__init__(f"{len(errors)} plugin(s) failed to load", text)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
