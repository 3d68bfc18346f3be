#!/bin/sh
# Create (or refresh) the project's virtual environment.
#   sh scripts/venv.sh runtime   the package and what it needs to run (make serve)
#   sh scripts/venv.sh [dev]     that, every extra and the dev and benchmark tools (make test)
set -eu
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
WHAT="${1:-dev}"
say() { echo "venv: $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
say "updating pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
case "$WHAT" in
runtime)
    say "installing dapi-config and its runtime dependencies (about 85 MB; a minute or so)"
    "$VENV/bin/python" -m pip install --quiet -e .
    ;;
dev)
    # encryption: the SQLCipher extra is tested too. --only-binary: its wheel bundles the
    # library; building it from source would need system SQLCipher headers, so fail clearly.
    say "installing dapi-config with every extra and the dev tools (several hundred MB)"
    "$VENV/bin/python" -m pip install --quiet --only-binary sqlcipher3 \
        -e ".[dev,bench,encryption,postgres]"
    ;;
*)
    say "unknown target '$WHAT' (runtime or dev)"
    exit 2
    ;;
esac
"$VENV/bin/python" -c "import dapi_config" || { say "the install did not complete"; exit 1; }
say "ready: $VENV/bin/dapi-config (or: . $VENV/bin/activate, then dapi-config)"
