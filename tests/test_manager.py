"""Every ConfigManager method: semantics, errors that change nothing, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dapi_config import (
    BandwidthParamsCache,
    ConfigManager,
    DuplicateNodeError,
    Hardware,
    InferenceNodeConfig,
    ModelConfig,
    NodeNotFoundError,
    NodeVersion,
    SeedInfo,
    UpgradePlan,
    ValidationError,
    ValidationParamsCache,
)

pytestmark = [pytest.mark.both_backends, pytest.mark.remote_contract]


def node(node_id: str = "node1", **changes: object) -> InferenceNodeConfig:
    data: dict[str, object] = {
        "id": node_id,
        "host": "10.0.0.5",
        "inference_segment": "/v1",
        "inference_port": 5000,
        "poc_segment": "/poc",
        "poc_port": 8080,
        "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--dtype", "float16"]}},
        "max_concurrent": 500,
        "hardware": [{"type": "H100", "count": 8}],
        "version": "v1",
    }
    data.update(changes)
    return InferenceNodeConfig.model_validate(data)


def snapshot(cm: ConfigManager) -> dict[str, object]:
    """Everything dynamic, to compare before/after a failed write."""
    return {
        "height": cm.get_height(),
        "version": cm.get_current_node_version(),
        "schedule": cm.get_node_versions(),
        "seeds": (cm.get_current_seed(), cm.get_previous_seed(), cm.get_upcoming_seed()),
        "validation": cm.get_validation_params(),
        "bandwidth": cm.get_bandwidth_params(),
        "plan": cm.get_upgrade_plan(),
        "nodes": cm.get_nodes(),
        "revision": cm.state_summary()["revision"],
    }


# --- defaults ----------------------------------------------------------------------------


def test_unset_values_read_as_documented_defaults(manager: ConfigManager) -> None:
    assert manager.get_height() == 0
    assert manager.get_current_node_version() == ""
    assert manager.get_node_versions() == []
    for seed in (
        manager.get_current_seed(),
        manager.get_previous_seed(),
        manager.get_upcoming_seed(),
    ):
        assert seed == SeedInfo(seed=0, epoch_index=0, signature="")
    assert manager.get_validation_params() == ValidationParamsCache()
    assert manager.get_bandwidth_params() == BandwidthParamsCache()
    assert manager.get_upgrade_plan() == UpgradePlan()
    assert manager.get_nodes() == []


def test_static_reads_come_from_the_yaml(manager: ConfigManager) -> None:
    assert manager.get_api_config().port == 8080
    assert manager.get_api_config().public_url == "http://127.0.0.1:9000"
    assert manager.get_chain_node_config().signer_key_name == "operator"
    assert manager.get_nats_config().port == 4222
    assert manager.get_ml_node_key_config().worker_public == ""


# --- height, seeds, params, plan ----------------------------------------------------------


def test_height_round_trip_and_validation(manager: ConfigManager) -> None:
    manager.set_height(1200)
    assert manager.get_height() == 1200
    before = snapshot(manager)
    for bad in (-1, 2**63, "12", 1.5, True, None):
        with pytest.raises(ValidationError) as info:
            manager.set_height(bad)  # type: ignore[arg-type]
        assert info.value.field == "height"
    assert snapshot(manager) == before


def test_seeds_set_and_rotate(manager: ConfigManager) -> None:
    prev = SeedInfo(seed=1, epoch_index=1, signature="aa")
    cur = SeedInfo(seed=2, epoch_index=2, signature="bb", claimed=True)
    up = SeedInfo(seed=3, epoch_index=3, signature="cc")
    manager.set_previous_seed(prev)
    manager.set_current_seed(cur)
    manager.set_upcoming_seed(up)
    assert (manager.get_previous_seed(), manager.get_current_seed()) == (prev, cur)
    assert manager.get_upcoming_seed() == up
    manager.rotate_seeds()
    assert manager.get_previous_seed() == cur
    assert manager.get_current_seed() == up
    assert manager.get_upcoming_seed() == SeedInfo()


def test_bad_seed_changes_nothing(manager: ConfigManager) -> None:
    manager.set_current_seed(SeedInfo(seed=7, epoch_index=1, signature="x"))
    before = snapshot(manager)
    for bad in (
        {"seed": "nope", "epoch_index": 1, "signature": ""},
        {"seed": 1, "epoch_index": -1, "signature": ""},
        {"seed": 1, "epoch_index": 1, "signature": "", "claimed": "maybe"},
        {"seed": 2**64, "epoch_index": 1, "signature": ""},
    ):
        with pytest.raises(ValidationError):
            manager.set_current_seed(bad)  # type: ignore[arg-type]
    assert snapshot(manager) == before


def test_params_and_plan(manager: ConfigManager) -> None:
    v = ValidationParamsCache(timestamp_expiration=60, timestamp_advance=30, expiration_blocks=20)
    b = BandwidthParamsCache(
        estimated_limits_per_block_kb=1024, kb_per_input_token=0.0023, kb_per_output_token=0.64
    )
    plan = UpgradePlan(
        name="v0.2.0",
        height=5000,
        binaries={"linux/amd64": "https://example.org/dapi.zip"},
        node_version="v2",
    )
    manager.set_validation_params(v)
    manager.set_bandwidth_params(b)
    manager.set_upgrade_plan(plan)
    assert manager.get_validation_params() == v
    assert manager.get_bandwidth_params() == b
    assert manager.get_upgrade_plan() == plan
    before = snapshot(manager)
    with pytest.raises(ValidationError):
        manager.set_bandwidth_params({"kb_per_input_token": float("nan")})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        manager.set_validation_params({"timestamp_expiration": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        manager.set_upgrade_plan({"name": "x", "height": -5})  # type: ignore[arg-type]
    assert snapshot(manager) == before


# --- node registry -------------------------------------------------------------------------


def test_node_crud(manager: ConfigManager) -> None:
    stored = manager.add_node(node("a"))
    assert stored == node("a")
    manager.add_node(node("b", is_enabled=False))
    assert [n.id for n in manager.get_nodes()] == ["a", "b"]
    assert manager.get_node("b").is_enabled is False

    updated = manager.update_node(node("a", host="10.0.0.9", max_concurrent=10))
    assert updated.host == "10.0.0.9"
    assert manager.get_node("a").max_concurrent == 10
    assert [n.id for n in manager.get_nodes()] == ["a", "b"], "update keeps the order"

    assert manager.set_node_enabled("b", True).is_enabled is True
    assert manager.get_node("b").is_enabled is True

    removed = manager.remove_node("a")
    assert removed.host == "10.0.0.9"
    assert [n.id for n in manager.get_nodes()] == ["b"]


def test_node_errors_change_nothing(manager: ConfigManager) -> None:
    manager.add_node(node("a"))
    before = snapshot(manager)
    with pytest.raises(DuplicateNodeError) as dup:
        manager.add_node(node("a", host="other"))
    assert dup.value.node_id == "a"
    with pytest.raises(NodeNotFoundError):
        manager.update_node(node("missing"))
    with pytest.raises(NodeNotFoundError):
        manager.remove_node("missing")
    with pytest.raises(NodeNotFoundError):
        manager.set_node_enabled("missing", False)
    with pytest.raises(NodeNotFoundError):
        manager.get_node("missing")
    bad_nodes: list[dict[str, object]] = [
        {"id": "x", "host": "h", "inference_port": 0, "poc_port": 1},
        {"id": "x", "host": "h", "inference_port": 1, "poc_port": 70000},
        {"id": "", "host": "h", "inference_port": 1, "poc_port": 1},
        {"id": "a/b", "host": "h", "inference_port": 1, "poc_port": 1},
        {"id": "x", "host": "", "inference_port": 1, "poc_port": 1},
        {"id": "x", "host": "h", "inference_port": 1, "poc_port": 1, "base_url": "not a url"},
        {"id": "x", "host": "h", "inference_port": 1, "poc_port": 1, "is_enabled": "maybe"},
        {"id": "x", "host": "h", "inference_port": 1, "poc_port": 1, "hardware": [{"type": ""}]},
    ]
    for bad in bad_nodes:
        with pytest.raises(ValidationError):
            manager.add_node(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        manager.set_node_enabled("a", "yes")  # type: ignore[arg-type]
    assert snapshot(manager) == before


def test_validation_error_names_the_field(manager: ConfigManager) -> None:
    with pytest.raises(ValidationError) as info:
        manager.add_node({"id": "x", "host": "h", "inference_port": 99999, "poc_port": 1})  # type: ignore[arg-type]
    assert info.value.field == "inference_port"
    assert "inference_port" in str(info.value)


def test_set_nodes_is_an_atomic_replace(manager: ConfigManager) -> None:
    manager.add_node(node("old"))
    manager.set_nodes([node("n1"), node("n2"), node("n3")])
    assert [n.id for n in manager.get_nodes()] == ["n1", "n2", "n3"]
    before = snapshot(manager)
    with pytest.raises(DuplicateNodeError):
        manager.set_nodes([node("x"), node("y"), node("x")])
    with pytest.raises(ValidationError) as info:
        manager.set_nodes([node("x"), {"id": "y", "host": "h"}])  # type: ignore[list-item]
    assert info.value.field is not None and info.value.field.startswith("nodes.1.")
    assert snapshot(manager) == before
    manager.set_nodes([])
    assert manager.get_nodes() == []


def test_models_accept_legacy_shapes() -> None:
    n = InferenceNodeConfig.model_validate(
        {
            "id": "n",
            "host": "h",
            "inference_port": 1,
            "poc_port": 2,
            "models": [{"Qwen/Qwen2.5-7B-Instruct": {}}, {"other": {"Args": ["--x"]}}],
        }
    )
    assert n.models == {
        "Qwen/Qwen2.5-7B-Instruct": ModelConfig(args=[]),
        "other": ModelConfig(args=["--x"]),
    }
    assert n.hardware == [] and isinstance(Hardware(type="A100", count=1), Hardware)


def test_reads_return_copies(manager: ConfigManager) -> None:
    manager.add_node(node("a"))
    manager.set_upgrade_plan(UpgradePlan(name="p", height=1, binaries={"x": "y"}))
    manager.add_node_version(10, "v2")
    got = manager.get_node("a")
    got.host = "mutated"
    got.models["Qwen/Qwen2.5-7B-Instruct"].args.append("--evil")
    manager.get_nodes()[0].hardware.clear()
    manager.get_upgrade_plan().binaries["x"] = "changed"
    manager.get_node_versions().clear()
    api = manager.get_api_config()
    api.port = 1
    assert manager.get_node("a") == node("a")
    assert manager.get_upgrade_plan().binaries == {"x": "y"}
    assert manager.get_node_versions() == [NodeVersion(height=10, version="v2")]
    assert manager.get_api_config().port == 8080
    # The object passed in is not kept either.
    mine = node("b")
    manager.add_node(mine)
    mine.host = "changed-after-add"
    assert manager.get_node("b").host == "10.0.0.5"


# --- transactions ---------------------------------------------------------------------------


@pytest.mark.local_only
def test_transaction_batches_and_rolls_back(manager: ConfigManager) -> None:
    with manager.transaction():
        manager.set_height(10)
        manager.add_node(node("a"))
        assert manager.get_height() == 10, "reads inside see the pending writes"
    assert manager.get_height() == 10
    before = snapshot(manager)
    with pytest.raises(RuntimeError), manager.transaction():
        manager.set_height(11)
        manager.add_node(node("b"))
        manager.rotate_seeds()
        raise RuntimeError("caller changed its mind")
    assert snapshot(manager) == before
    assert manager.get_height() == 10, "the hot cache never shows a rolled-back value"


@pytest.mark.local_only
def test_a_snapshot_reads_one_committed_state_while_others_write(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    manager.add_node(node("a"))
    with ConfigManager.open(config_file, env=state_env) as other, manager.snapshot():
        assert [n.id for n in manager.get_nodes()] == ["a"]
        other.add_node(node("b"))  # another connection commits meanwhile: not blocked
        assert [n.id for n in manager.get_nodes()] == ["a"]  # the same state inside
    assert [n.id for n in manager.get_nodes()] == ["a", "b"]


@pytest.mark.local_only
def test_nested_transaction_inner_failure_keeps_outer(manager: ConfigManager) -> None:
    with manager.transaction():
        manager.set_height(1)
        with pytest.raises(DuplicateNodeError), manager.transaction():
            manager.add_node(node("a"))
            manager.add_node(node("a"))  # fails: the inner block is undone as a whole
        manager.add_node(node("c"))
    assert manager.get_height() == 1
    assert [n.id for n in manager.get_nodes()] == ["c"]


@pytest.mark.local_only
def test_failing_write_inside_batch_undoes_the_batch(manager: ConfigManager) -> None:
    manager.add_node(node("a"))
    before = snapshot(manager)
    with pytest.raises(DuplicateNodeError), manager.transaction():
        manager.set_height(99)
        manager.add_node(node("a"))
    assert snapshot(manager) == before


# --- worker key ----------------------------------------------------------------------------


@pytest.mark.local_only
def test_worker_key_goes_to_the_state_file_not_the_yaml(
    manager: ConfigManager, config_file: Path
) -> None:
    yaml_before = config_file.read_bytes()
    public = manager.create_worker_key()
    keys = manager.get_ml_node_key_config()
    assert keys.worker_public == public
    assert len(keys.worker_private) == 88  # base64 of Go's 64-byte seed||public form
    assert config_file.read_bytes() == yaml_before


def test_yaml_worker_key_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("ml_node_key_config:\n  worker_public: PUB\n  worker_private: PRIV\n")
    with ConfigManager.open(cfg) as cm:
        cm.create_worker_key()
        assert cm.get_ml_node_key_config().worker_public == "PUB"
        assert cm.get_ml_node_key_config().worker_private == "PRIV"


# --- persistence ----------------------------------------------------------------------------


def test_everything_persists_across_reopen(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node_version(100, "v2")
        cm.add_node_version(200, "v3")
        cm.set_height(150)
        cm.set_current_seed(SeedInfo(seed=5, epoch_index=2, signature="s"))
        cm.set_validation_params(ValidationParamsCache(expiration_blocks=7))
        cm.set_bandwidth_params(BandwidthParamsCache(kb_per_output_token=0.5))
        cm.set_upgrade_plan(UpgradePlan(name="up", height=900))
        cm.add_node(node("a"))
        cm.set_node_enabled("a", False)
        public = cm.create_worker_key()
        expected = snapshot(cm)
    with ConfigManager.open(config_file) as cm:
        assert snapshot(cm) == expected
        assert cm.get_current_node_version() == "v2"
        assert cm.get_ml_node_key_config().worker_public == public


def test_state_path_defaults_beside_config(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        assert cm.state_path == config_file.parent / "state.db"
    assert (config_file.parent / "state.db").exists()


def test_state_path_from_env(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "s.db"
    with ConfigManager.open(config_file, env={"API_STATE_DB_PATH": str(target)}) as cm:
        cm.set_height(3)
    assert target.exists()
    with ConfigManager.open(config_file, state_path=target) as cm:
        assert cm.get_height() == 3


def test_normal_durability_works(config_file: Path) -> None:
    with ConfigManager.open(config_file, durability="normal") as cm:
        cm.set_height(5)
        conn = sqlite3.connect(cm.state_path)
        conn.close()
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 5
    with pytest.raises(ValueError, match="durability"):
        ConfigManager.open(config_file, durability="fast")  # type: ignore[arg-type]


def test_closed_manager_refuses_use(config_file: Path) -> None:
    cm = ConfigManager.open(config_file)
    cm.close()
    cm.close()
    from dapi_config import StateUnavailableError

    with pytest.raises(StateUnavailableError):
        cm.set_height(1)


@pytest.mark.parametrize("epoch", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_epoch_index_is_a_uint64_over_its_full_range(config_file: Path, epoch: int) -> None:
    """Reproduction: Go's epoch_index is a uint64; values >= 2**63 ended in an OverflowError
    traceback from the SQLite driver."""
    with ConfigManager.open(config_file) as cm:
        cm.set_upcoming_seed(SeedInfo(seed=-5, epoch_index=epoch, signature="ab"))
        cm.rotate_seeds()
        assert cm.get_current_seed().epoch_index == epoch
        assert cm.export_full_config()["current_seed"]["epoch_index"] == epoch
    with ConfigManager.open(config_file) as cm:
        assert cm.get_current_seed().epoch_index == epoch


@pytest.mark.parametrize("epoch", [-1, 2**64, 1.5, "x"])
def test_epoch_index_outside_uint64_is_a_validation_error(
    manager: ConfigManager, epoch: object
) -> None:
    with pytest.raises(ValidationError, match="epoch_index"):
        manager.set_current_seed({"seed": 1, "epoch_index": epoch, "signature": ""})  # type: ignore[arg-type]
    assert manager.get_current_seed() == SeedInfo()
