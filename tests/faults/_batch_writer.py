"""Threads writing at once through one manager (group commit), until killed.

``python -m tests.faults._batch_writer DIR THREADS``: every call that returned is reported on
stdout as ``ack ID`` (one unbuffered write, after the call returned), every commit as
``commit``. One call in five adds a node and then raises inside its transaction: its ``x-``
id must never be stored, whatever batch it shared.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig


class Refused(Exception):
    """The deliberate failure of a call inside a shared batch."""


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(directory: Path, threads: int) -> None:
    cm = ConfigManager.open(directory / "config.yaml", state_path=directory / "state.db")
    cm.on_commit(lambda: say("commit"))
    run = os.urandom(4).hex()
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        i = 0
        while True:
            i += 1
            node_id = f"{run}-t{t}-{i}"
            node = InferenceNodeConfig(id=node_id, host="10.0.0.1", inference_port=1, poc_port=2)
            if i % 5 == 0:
                try:
                    with cm.transaction():
                        cm.add_node(node.model_copy(update={"id": "x-" + node_id}))
                        raise Refused
                except Refused:
                    continue
            cm.add_node(node)
            say(f"ack {node_id}")

    for t in range(threads):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    start.wait()
    say("ready")
    threading.Event().wait()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
