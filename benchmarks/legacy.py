"""The predecessor's write path, re-created faithfully for comparison.

The Go dapi kept the whole configuration (static sections, every dynamic value, the node
registry) in one struct behind a mutex. Every change (``SetHeight`` each block, ``SetNodes``
after each admin add/delete) ran ``writeConfig()``: marshal the WHOLE config to YAML (koanf map
through Go's ``yaml.v3``), open the file with ``O_WRONLY|O_CREATE|O_TRUNC``, write, close; no
fsync, no temp file.

:class:`LegacyConfigFile` does exactly that (``durable=False``), or the fairer durable variant
(``durable=True``): temp file, fsync, rename, fsync of the directory, via the project's own
``atomic_write``. The document is kept as plain dicts (what the Go struct marshals from), so only
marshalling and I/O are timed, as in Go. The marshaller is the product's own re-creation of the
predecessor's output (``dapi_config._goyaml.render_go_yaml``: yaml.v3's layout, sorted keys,
4-space indent), which is also 3-6x faster than PyYAML's ``CSafeDumper`` (libyaml's C
emitter, kept for reference as :func:`marshal_pyyaml`); ``marshal_only`` times the marshalling
alone so the I/O share is visible.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

import yaml

from benchmarks._machine import yaml_dumper
from dapi_config._files import atomic_write
from dapi_config._goyaml import render_go_yaml

_DUMPER, _ = yaml_dumper()

#: What the machine table says about the marshaller.
MARSHALLER = "dapi_config._goyaml.render_go_yaml (the predecessor's yaml.v3 layout)"


def marshal(document: dict[str, Any]) -> bytes:
    """The whole config in the predecessor's YAML layout."""
    return render_go_yaml(document).encode("utf-8")


def marshal_pyyaml(document: dict[str, Any]) -> bytes:
    """The same document through PyYAML's fastest dumper (for reference)."""
    text: str = yaml.dump(
        document, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text.encode("utf-8")


def _write_truncate(path: Path, data: bytes) -> None:
    # os.OpenFile(path, O_WRONLY|O_CREATE|O_TRUNC, 0644); Write; Close — the predecessor's path.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class LegacyConfigFile:
    """One legacy single-file config: an in-memory document rewritten in full per change."""

    def __init__(self, path: Path, document: dict[str, Any], *, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self.document = copy.deepcopy(document)
        self.document.setdefault("nodes", [])
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        data = marshal(self.document)
        if self.durable:
            atomic_write(self.path, data, mode=0o600)
        else:
            _write_truncate(self.path, data)

    def set_height(self, height: int) -> None:
        with self._lock:
            self.document["current_height"] = height
            self._write()

    def add_node(self, node: dict[str, Any]) -> None:
        with self._lock:
            self.document["nodes"].append(node)
            self._write()

    def remove_node(self, node_id: str) -> None:
        with self._lock:
            self.document["nodes"] = [n for n in self.document["nodes"] if n["id"] != node_id]
            self._write()

    def write_only(self, data: bytes) -> None:
        """Write already-marshalled bytes: the legacy path with an infinitely fast marshaller."""
        with self._lock:
            if self.durable:
                atomic_write(self.path, data, mode=0o600)
            else:
                _write_truncate(self.path, data)

    def marshal_only(self) -> bytes:
        with self._lock:
            return marshal(self.document)

    def marshal_pyyaml_only(self) -> bytes:
        with self._lock:
            return marshal_pyyaml(self.document)
