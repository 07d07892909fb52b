"""Where plugins come from, described so that another process can load the same ones.

The processes mode starts workers with ``fork``, ``forkserver`` or ``spawn``; with the last
two nothing is inherited, so each worker loads its plugins again from this description
(a directory, or the file of a single-file server).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

from kongish_pdk.errors import PluginLoadError
from kongish_pdk.plugin.loader import load_directory
from kongish_pdk.plugin.spec import PluginSpec, build_spec


@dataclass(frozen=True)
class PluginSource:
    directory: str | None = None
    # A single-file server: the file, the plugin's name and what start_dedicated_server got.
    file: str | None = None
    name: str = ""
    class_name: str = "Plugin"
    version: Any = None
    priority: Any = 0
    schema: Any = None

    def load(self) -> list[PluginSpec]:
        if self.directory is not None:
            return load_directory(self.directory)
        assert self.file is not None, "a PluginSource needs a directory or a file"
        return [self._load_file()]

    def _load_file(self) -> PluginSpec:
        assert self.file is not None
        file = os.path.abspath(self.file)
        module_name = f"kongish_pdk_single.{self.name.replace('-', '_')}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, file)
            if spec is None or spec.loader is None:
                raise PluginLoadError(file, "cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)  # its `if __name__ == "__main__"` block stays off
        return build_spec(
            self.name, cls=getattr(module, self.class_name), version=self.version,
            priority=self.priority, schema=self.schema, source=file,
            modtime=os.stat(file).st_mtime,
        )
