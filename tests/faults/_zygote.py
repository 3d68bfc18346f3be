"""A pre-warmed writer factory for the kill -9 campaign (run as ``python -m tests.faults._zygote``).

Starting Python and importing dapi_config costs far more than a round of the campaign, so this
process imports everything once and then forks one writer per round. Each writer opens the
state file itself (connections are per process: nothing SQLite is carried across the fork),
then writes until it is killed, announcing every acknowledged change on stdout with one
``os.write`` (a line is written whole or not at all; the Python buffer is never inherited).

Commands on stdin, one per line:

- ``mixed SEED ROUND START_HEIGHT CONFIG``: the mixed workload of :mod:`._workload`;
- ``legacy SEED ROUND PATH NODES``: the predecessor's write path (truncate, then write the
  whole YAML) rewriting PATH with a new height forever.

The writer prints ``start PID``, ``ready``, then ``ack N`` per acknowledged operation; after it
dies the zygote prints ``exit CODE``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from ruamel.yaml import YAML

from dapi_config import ConfigManager
from tests.faults._workload import apply, operations


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def mixed(seed: int, round_no: int, start_height: int, config: str) -> None:
    say(f"start {os.getpid()}")
    cm = ConfigManager.open(config)
    say("ready")
    for n, op in enumerate(operations(seed, round_no, start_height), start=1):
        apply(cm, op)
        say(f"ack {n}")


def legacy_document(nodes: int, height: int) -> str:
    """The predecessor's single-file layout, rendered the way its writer did (whole file)."""
    import io

    doc = {
        "api": {"port": 8080, "public_url": "http://127.0.0.1:9000", "admin_server_port": 9200},
        "nodes": [
            {
                "id": f"node-{i}",
                "host": f"10.0.{i // 250}.{i % 250}",
                "inference_port": 5000,
                "poc_port": 8080,
                "max_concurrent": 4,
                "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "1"]}},
            }
            for i in range(nodes)
        ],
        "chain_node": {"url": "http://127.0.0.1:26657", "signer_key_name": "operator"},
        "current_height": height,
        "current_seed": {"seed": 42, "epoch_index": 7, "signature": "ab" * 32},
        "nats": {"host": "127.0.0.1", "port": 4222},
    }
    out = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.dump(doc, out)
    return out.getvalue()


def legacy(round_no: int, path: str, nodes: int) -> None:
    say(f"start {os.getpid()}")
    template = legacy_document(nodes, 10**9)
    say("ready")
    height = round_no * 1_000_000
    while True:
        height += 1
        data = template.replace(str(10**9), str(height)).encode()
        # The predecessor: os.WriteFile = open(O_WRONLY|O_CREAT|O_TRUNC) then write.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        say(f"ack {height}")


def child(argv: list[str]) -> None:
    code = 0
    try:
        if argv[0] == "mixed":
            mixed(int(argv[1]), int(argv[2]), int(argv[3]), argv[4])
        elif argv[0] == "legacy":
            legacy(int(argv[2]), argv[3], int(argv[4]))
        else:
            raise ValueError(f"unknown command {argv[0]}")
    except BaseException:
        say("error " + traceback.format_exc().replace("\n", " | "))
        code = 3
    finally:
        os._exit(code)


def serve_forks(run_child: Callable[[list[str]], None]) -> None:
    """Fork ``run_child(argv)`` for each command line on stdin, one at a time, and print
    ``exit CODE`` after each child ends; ``quit`` stops. ``run_child`` must end in ``os._exit``."""
    for line in sys.stdin:
        argv = line.split()
        if not argv:
            continue
        if argv[0] == "quit":
            break
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            run_child(argv)
        _, status = os.waitpid(pid, 0)
        say(f"exit {os.waitstatus_to_exitcode(status)}")


def main() -> None:
    serve_forks(child)


if __name__ == "__main__":
    main()
