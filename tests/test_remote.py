"""RemoteConfigManager beyond the shared contract (tests/test_manager.py runs it too): value
writes batched into one PATCH (together or not at all, refused when the state changed since
the block began), typed errors, the admin token, node tokens sent in clear and sealed by the
service, and a service that cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dapi_config
from dapi_config import ConfigManager
from dapi_config.api import create_app
from dapi_config.errors import (
    ConfigError,
    NotSupportedError,
    PreconditionFailedError,
    StateUnavailableError,
    ValidationError,
)
from dapi_config.remote import RemoteConfigManager
from tests.api.conftest import RunningServer, serve_app

TOKEN = "remote-admin-token-4f2a"


@pytest.fixture
def served(config_file: object) -> Iterator[RunningServer]:
    cm = ConfigManager.open(config_file, env={"DAPI_API__ADMIN_TOKEN": TOKEN})  # type: ignore[arg-type]
    server = serve_app(create_app(cm), cm)
    try:
        yield server
    finally:
        server.stop()
        cm.close()


def test_a_transaction_is_one_patch(served: RunningServer) -> None:
    local = served.manager
    with RemoteConfigManager(served.url, token=TOKEN) as remote:
        with remote.transaction():
            remote.set_height(100)
            remote.set_upgrade_plan({"name": "v2", "height": 200})  # type: ignore[arg-type]
            remote.set_upcoming_seed({"seed": 9})  # type: ignore[arg-type]
            assert local.get_height() == 0  # nothing sent before the block ends
        assert (local.get_height(), local.get_upgrade_plan().name) == (100, "v2")
        assert remote.get_upcoming_seed().seed == 9
        # Changed by someone else meanwhile: refused whole, nothing written.
        with pytest.raises(PreconditionFailedError), remote.transaction():
            remote.set_height(150)
            local.set_height(120)
        assert local.get_height() == 120
        # A bad value is refused before anything is sent; a failing block sends nothing.
        with pytest.raises(ValidationError):
            remote.set_height(-1)
        with pytest.raises(RuntimeError), remote.transaction():
            remote.set_height(130)
            raise RuntimeError("changed my mind")
        assert local.get_height() == 120
        with pytest.raises(NotSupportedError), remote.transaction():
            remote.add_node_version(300, "v3")  # not expressible in the batch: said so


def test_tokens_errors_and_reachability(served: RunningServer) -> None:
    with RemoteConfigManager(served.url, token=TOKEN) as remote:
        cloud = {
            "id": "cloud",
            "base_url": "https://svc.example",
            "auth_token": "tok-abcdef",
            "models": {"m": {"args": []}},
            "max_concurrent": 4,
        }
        stored = remote.add_node(cloud)  # type: ignore[arg-type]
        assert (
            stored.auth_token is not None and stored.auth_token.get_secret_value() != "tok-abcdef"
        )
        token = served.manager.get_node("cloud").auth_token
        assert token is not None and token.get_secret_value() == "tok-abcdef"  # sealed there
        assert remote.remove_node_version(1, "none") is False
        # An update keeps the admin state unless it says is_enabled, as the library's does.
        remote.set_node_enabled("cloud", False)
        remote.update_node({**cloud, "max_concurrent": 8})  # type: ignore[arg-type]
        assert served.manager.get_node("cloud").is_enabled is False
        remote.update_node({**cloud, "is_enabled": True})  # type: ignore[arg-type]
        assert served.manager.get_node("cloud").is_enabled is True
        assert remote.get_api_config().admin_token is not None
    with (
        RemoteConfigManager(served.url, token="wrong") as stranger,
        pytest.raises(ConfigError, match="token"),
    ):
        stranger.get_height()
    with (
        RemoteConfigManager("http://127.0.0.1:9", timeout=2) as nowhere,
        pytest.raises(StateUnavailableError, match="cannot reach"),
    ):
        nowhere.get_height()


def test_the_package_offers_it() -> None:
    assert dapi_config.RemoteConfigManager is RemoteConfigManager
