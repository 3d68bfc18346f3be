#!/bin/sh
# Print a command that runs Python VERSION (e.g. 3.13): pythonVERSION from PATH when it runs,
# else the newest matching interpreter pyenv knows. Exit 1 when there is none.
set -eu
want="$1"
if command -v "python$want" >/dev/null 2>&1 && "python$want" -c 'pass' >/dev/null 2>&1; then
    command -v "python$want"
    exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
    version=$(pyenv versions --bare 2>/dev/null | grep -E "^$(echo "$want" | sed 's/\./\\./')(\.[0-9]+)?$" | sort -V | tail -n 1)
    if [ -n "$version" ]; then
        found=$(PYENV_VERSION="$version" pyenv which "python$want" 2>/dev/null || true)
        if [ -n "$found" ] && "$found" -c 'pass' >/dev/null 2>&1; then
            echo "$found"
            exit 0
        fi
    fi
fi
echo "no Python $want found (looked for python$want on PATH and in pyenv)" >&2
exit 1
