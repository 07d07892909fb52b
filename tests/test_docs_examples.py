"""The worked example of docs/testing.md runs as written, in both kit modes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def test_testing_guide_example_passes_in_both_modes(tmp_path: Path) -> None:
    blocks = python_blocks((ROOT / "docs" / "testing.md").read_text())
    plugin, tests, unittest_example = blocks[0], blocks[1], blocks[3]
    (tmp_path / "plugins").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "plugins" / "greeter.py").write_text(plugin)
    (tmp_path / "tests" / "test_greeter.py").write_text(tests)
    (tmp_path / "tests" / "test_greeter_unittest.py").write_text(unittest_example)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--kong-mode=both",
         "tests"], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout  # 3 tests x 2 modes + the unittest one
