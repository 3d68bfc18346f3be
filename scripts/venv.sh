#!/bin/sh
# Create (or refresh) the project's virtual environment with the package and its dev tools.
set -eu
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# encryption: the SQLCipher extra is tested too. --only-binary: its wheel bundles the library;
# building it from source would need system SQLCipher headers, so fail clearly instead.
"$VENV/bin/python" -m pip install --quiet --only-binary sqlcipher3 -e ".[dev,bench,encryption,postgres]"
