"""The typed surface and the PDK reference are generated from the table and must be current."""

from __future__ import annotations

import subprocess
import sys

from kongish_pdk.pdk import reference
from kongish_pdk.pdk.generate import REFERENCE, SURFACE, render
from kongish_pdk.pdk.table import FUNCTIONS, KONG_PHASE_ORDER, PHASES


def test_generated_files_are_up_to_date() -> None:
    done = subprocess.run([sys.executable, "-m", "kongish_pdk.pdk.generate", "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert SURFACE.read_text() == render()
    assert REFERENCE.read_text() == reference.render()


def test_reference_documents_every_function() -> None:
    text = REFERENCE.read_text()
    for fn in FUNCTIONS:
        assert f"### `{fn.name}`" in text


def test_phase_rows_agree_with_kong_checks() -> None:
    for fn in FUNCTIONS:
        assert set(fn.phases) <= set(PHASES), fn.name
        if fn.kong_phases:
            assert list(fn.kong_phases) == [p for p in KONG_PHASE_ORDER if p in fn.kong_phases]
            assert fn.phases == frozenset(fn.kong_phases) & frozenset(PHASES), fn.name
