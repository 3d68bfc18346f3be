"""A state file removed or replaced under an open store: writes refused (they would land in a
file nobody reads), reads keep the last committed state, writes resume when it is back."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.errors import StateUnavailableError


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.1", inference_port=5000, poc_port=8080)


def test_removed_file_refuses_writes_then_resumes_when_back(manager: ConfigManager) -> None:
    manager.set_height(1)
    manager.add_node(node("a"))
    state = manager.state_path
    aside = state.with_name("moved.db")
    os.replace(state, aside)
    with pytest.raises(StateUnavailableError, match="removed while this process had it open"):
        manager.set_height(2)
    with pytest.raises(StateUnavailableError, match="nothing was written"):
        manager.add_node(node("b"))
    with pytest.raises(StateUnavailableError, match="removed"):
        manager.get_nodes()  # every other read refuses the old file, on every thread
    os.replace(aside, state)
    assert [n.id for n in manager.get_nodes()] == ["a"]
    manager.set_height(3)  # same file back: no restart needed
    assert manager.get_height() == 3


def test_replaced_file_refuses_writes_from_every_thread(manager: ConfigManager) -> None:
    manager.set_height(1)
    state = manager.state_path
    copy = state.with_name("copy.db")
    shutil.copyfile(state, copy)
    os.replace(copy, state)
    with pytest.raises(StateUnavailableError, match="replaced by another file"):
        manager.set_height(2)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            manager.set_height(5)  # a new connection must not open the new file either
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], StateUnavailableError)
    assert "replaced" in str(errors[0])
    with ConfigManager.open(manager.config_path) as fresh:  # a restart uses the new file
        fresh.set_height(7)
        assert fresh.get_height() == 7
