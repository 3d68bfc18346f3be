"""The writer thread of the hot routes: concurrent staged writes share one transaction, which
holds only their writes; the checks before it and the replies after it run outside it (so the
turn to write among the workers of ``serve --workers N`` is held for the store's work only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dapi_config import ConfigManager
from dapi_config.api.write_queue import Staged, WriteQueue

JOBS = 12


def test_staged_writes_share_a_transaction_that_holds_only_the_writes(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = ConfigManager.open(config_file)
    reader = ConfigManager.open(config_file)
    depth = [0]
    original = ConfigManager.transaction

    @contextlib.contextmanager
    def counted(self: ConfigManager) -> Iterator[None]:
        depth[0] += 1
        try:
            with original(self):
                yield
        finally:
            depth[0] -= 1

    monkeypatch.setattr(ConfigManager, "transaction", counted)
    seen: dict[str, list[Any]] = {"stage": [], "write": [], "answer": []}

    def job(index: int) -> Staged:
        seen["stage"].append(depth[0])

        def write(manager: ConfigManager) -> int:
            seen["write"].append(depth[0])
            manager.set_height(1000 + index)
            return index

        def answer(result: int) -> tuple[int, bool]:
            seen["answer"].append(depth[0])
            # After the commit: another connection sees this write (or a later one).
            return result, reader.get_height() >= 1000

        return Staged(write, answer)

    def failing() -> Staged:
        def write(manager: ConfigManager) -> None:
            manager.set_height(-1)  # refused: undone alone, the others commit

        return Staged(write, lambda _: None, on_error=lambda exc: f"refused: {type(exc).__name__}")

    async def main() -> list[Any]:
        queue = WriteQueue(cm)
        jobs = [queue.run(lambda i=i: job(i)) for i in range(JOBS)]
        return await asyncio.gather(*jobs, queue.run(failing))

    try:
        # Its own thread: a test before may leave an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, main()).result(timeout=60)
        assert results[:JOBS] == [(i, True) for i in range(JOBS)]
        assert results[JOBS] == "refused: ValidationError"
        assert seen["stage"] == [0] * JOBS and seen["answer"] == [0] * JOBS
        assert 1 in seen["write"]  # some writes shared the queue's transaction
        assert 1000 <= reader.get_height() < 1000 + JOBS
    finally:
        reader.close()
        cm.close()
