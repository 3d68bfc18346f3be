"""Another process writing the state file, driven line by line from stdin (for hot-cache tests).

Commands: ``set H`` (set_height through the library), ``version H V`` (add_node_version),
``checkpoint MODE`` (``PRAGMA wal_checkpoint(MODE)`` on a plain connection), ``quit``.
Prints ``ok`` after each command has committed.
"""

from __future__ import annotations

import sqlite3
import sys

from dapi_config import ConfigManager


def main(config: str, state: str) -> None:
    with ConfigManager.open(config, state) as cm:
        print("ok", flush=True)
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "set":
                cm.set_height(int(args[0]))
            elif cmd == "version":
                cm.add_node_version(int(args[0]), args[1])
            elif cmd == "checkpoint":
                conn = sqlite3.connect(state, isolation_level=None)
                try:
                    busy = conn.execute(f"PRAGMA wal_checkpoint({args[0]})").fetchone()[0]
                finally:
                    conn.close()
                if busy:
                    raise SystemExit(f"checkpoint {args[0]} was blocked")
            elif cmd == "quit":
                break
            else:
                raise SystemExit(f"unknown command {cmd!r}")
            print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
