"""Child processes for the concurrency and crash tests (run as ``python -m``)."""

from __future__ import annotations

import sys

from dapi_config import ConfigManager, InferenceNodeConfig


def heights(config: str, start: int) -> None:
    """Write increasing heights forever, printing each one after set_height returns."""
    with ConfigManager.open(config) as cm:
        height = start
        while True:
            cm.set_height(height)
            sys.stdout.write(f"{height}\n")
            sys.stdout.flush()
            height += 1


def contend(config: str, tag: str, rounds: int) -> None:
    """Read-modify-write increments and unique node adds, racing another process."""
    with ConfigManager.open(config) as cm:
        for i in range(rounds):
            with cm.transaction():
                cm.set_height(cm.get_height() + 1)
            cm.add_node(
                InferenceNodeConfig(id=f"{tag}-{i}", host="h", inference_port=1, poc_port=2)
            )
    sys.stdout.write("done\n")


def set_once(config: str, height: int) -> None:
    with ConfigManager.open(config) as cm:
        cm.set_height(height)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "heights":
        heights(args[0], int(args[1]))
    elif command == "contend":
        contend(args[0], args[1], int(args[2]))
    elif command == "set":
        set_once(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown command {command}")
