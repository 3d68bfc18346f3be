"""One-shot child processes for the fail-point tests (``python -m tests.faults._actions``).

Each prints ``done`` when it returns; a fail point armed through ``DAPI_CONFIG_FAILPOINT``
kills it with SIGKILL before that.
"""

from __future__ import annotations

import sys

from dapi_config import ConfigManager


def main() -> None:
    command, config, *rest = sys.argv[1:]
    with ConfigManager.open(config) as cm:
        if command == "set-height":
            cm.set_height(int(rest[0]))
        elif command == "backup":
            cm.backup()
        elif command == "restore":
            cm.restore_backup(rest[0])
        elif command == "open":
            pass
        else:
            raise SystemExit(f"unknown command {command}")
    sys.stdout.write("done\n")


if __name__ == "__main__":
    main()
