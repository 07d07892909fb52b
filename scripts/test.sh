#!/usr/bin/env bash
# Runs the whole suite: lint, types, generated files up to date, then every test (including
# the real nginx gateway and the three concurrency modes). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m kongish_pdk.pdk.generate --check
.venv/bin/python -m pytest -q "$@"
