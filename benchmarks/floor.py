"""The physical line of an HTTP node write: the least ``POST /admin/v1/nodes`` must do.

A bare ASGI app, no framework: read the body, decode it (pydantic-core's JSON parser, the
decoder the product uses), check the types of a node's fields by hand, hand the write to one
SQLite writer thread that commits the writes queued meanwhile together (group commit; WAL,
``synchronous=FULL``: every acknowledged write is on disk), each write an UPSERT of the node
and an audit row with its old and new value, and answer the stored document. What the product
does beyond this (token check, role table, cross-origin guard, metrics, the access log, the
pydantic model, the ETag, the revision) is its overhead over the floor.

Served by ``benchmarks.peers`` as ``uvicorn benchmarks.floor:app`` (env ``FLOOR_DB``: the
database file). Never used by the product.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from typing import Any

from pydantic_core import from_json, to_json

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, document TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_log (revision INTEGER PRIMARY KEY AUTOINCREMENT, "
    "at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, target TEXT NOT NULL, old TEXT, new TEXT)",
)
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "host": str,
    "inference_segment": str,
    "inference_port": int,
    "poc_segment": str,
    "poc_port": int,
    "models": dict,
    "max_concurrent": int,
    "hardware": list,
    "version": str,
    "is_enabled": bool,
}


class _Writer(threading.Thread):
    """One connection, one thread: takes every queued write, commits them in one transaction,
    then wakes their requests."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.jobs: queue.SimpleQueue[tuple[str, str, asyncio.Future[None]]] = queue.SimpleQueue()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self.db.execute(statement)

    def run(self) -> None:
        db = self.db
        while True:
            batch = [self.jobs.get()]
            while True:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            db.execute("BEGIN IMMEDIATE")
            for node_id, document, _ in batch:
                row = db.execute("SELECT document FROM nodes WHERE id = ?", (node_id,)).fetchone()
                db.execute(
                    "INSERT INTO nodes (id, document) VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET document = excluded.document",
                    (node_id, document),
                )
                db.execute(
                    "INSERT INTO audit_log (target, old, new) VALUES (?, ?, ?)",
                    (node_id, row[0] if row else None, document),
                )
            db.execute("COMMIT")
            for _, _, done in batch:
                done.get_loop().call_soon_threadsafe(done.set_result, None)


_writer: _Writer | None = None


def _bad(reason: str) -> tuple[int, bytes]:
    return 422, to_json({"error": reason})


async def _write(body: bytes) -> tuple[int, bytes]:
    global _writer  # noqa: PLW0603 - one writer per process, started on first use
    try:
        node = from_json(body)
    except ValueError:
        return _bad("not JSON")
    if not isinstance(node, dict):
        return _bad("not an object")
    problem = next(
        (name for name, kind in _FIELDS.items() if not isinstance(node.get(name), kind)), None
    )
    if problem is not None:
        return _bad(f"bad {problem}")
    if _writer is None:
        _writer = _Writer(os.environ["FLOOR_DB"])
        _writer.start()
    reply = to_json(node)
    done = asyncio.get_running_loop().create_future()
    _writer.jobs.put((node["id"], reply.decode(), done))
    await done
    return 200, reply


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    status, reply = 200, b"{}"
    if scope["method"] == "POST":  # anything else is the benchmark's readiness probe
        status, reply = await _write(b"".join(chunks))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply})
