#!/bin/sh
# Create (or refresh) the project's virtual environment with the package and its dev tools.
set -eu
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev,bench]"
