"""The models as a library user meets them: one ``dapi_config.ValidationError`` with the
product's words whatever the path (seen on main: building a model raised pydantic's error with
a 400-character regex in it), and the manager's opt-in strict mode for unknown fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dapi_config import (
    ConfigManager,
    InferenceNodeConfig,
    SeedInfo,
    UpgradePlan,
    ValidationError,
)
from dapi_config.models import NodeInput

NODE: dict[str, Any] = {"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}


def test_building_a_model_raises_the_products_error_in_words() -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceNodeConfig(**dict(NODE, host="bad host"))
    message = str(caught.value)
    assert message == (
        "invalid InferenceNodeConfig: host: expected a host name or an IP address "
        "(no spaces or control characters) (got 'bad host')"
    )
    assert caught.value.field == "host"
    assert "[^" not in message and "pydantic" not in message  # no regex, no pydantic link


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda data: InferenceNodeConfig(**data), id="init"),
        pytest.param(InferenceNodeConfig.model_validate, id="model_validate"),
        pytest.param(
            lambda data: InferenceNodeConfig.model_validate_json(json.dumps(data)),
            id="model_validate_json",
        ),
        pytest.param(lambda data: NodeInput.model_validate(data, strict=True), id="NodeInput"),
    ],
)
def test_every_path_to_a_model_raises_the_same_error(build: Any) -> None:
    bad = dict(NODE, inference_port=70000, models={"m": {"args": [1]}})
    with pytest.raises(ValidationError) as caught:
        build(bad)
    fields = [item["field"] for item in caught.value.errors]
    assert fields == ["inference_port", "models.m.args.0"]
    assert "inference_port: Input should be less than or equal to 65535" in str(caught.value)


def test_assignment_raises_the_products_error_and_keeps_the_value() -> None:
    node = InferenceNodeConfig(**NODE)
    with pytest.raises(ValidationError, match=r"^invalid InferenceNodeConfig.poc_port: "):
        node.poc_port = -1
    assert node.poc_port == 8080


def test_a_secret_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceNodeConfig(**dict(NODE, auth_token=["not", "text", "s3cr3t"]))
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.errors[0]["input"] == "<redacted>"


def test_nested_models_are_still_validated_by_pydantic_alone() -> None:
    """The override keeps pydantic's fast path: a nested model is not built through the
    Python ``__init__`` (that would validate it twice)."""
    assert InferenceNodeConfig.__pydantic_custom_init__ is False
    node = InferenceNodeConfig.model_validate(dict(NODE, hardware=[{"type": "H100", "count": 2}]))
    assert node.hardware[0].count == 2


def _typo_node() -> dict[str, Any]:
    return dict(NODE, maxconcurrent=3, models={"qwen": {"args": [], "argz": ["--x"]}})


def test_strict_mode_refuses_unknown_fields_and_writes_nothing(config_file: Path) -> None:
    with ConfigManager.open(config_file, strict=True) as cm:
        revision = cm.get_audit(limit=1, newest=True)
        with pytest.raises(ValidationError) as caught:
            cm.add_node(_typo_node())  # type: ignore[arg-type]
        assert [item["field"] for item in caught.value.errors] == [
            "maxconcurrent",
            "models.qwen.argz",
        ]
        assert "did you mean 'max_concurrent'?" in str(caught.value)
        assert "did you mean 'args'?" in str(caught.value)
        with pytest.raises(ValidationError, match="upgrade plan: heigth: unknown field"):
            cm.set_upgrade_plan({"name": "v2", "heigth": 10})  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="seed: sed: unknown field"):
            cm.set_upcoming_seed(SeedInfo(seed=1, sed=2))
        assert cm.get_nodes() == [] and cm.get_upgrade_plan() == UpgradePlan()
        assert cm.get_audit(limit=1, newest=True) == revision
        # Known fields only: written as ever.
        cm.add_node(dict(NODE, max_concurrent=3))  # type: ignore[arg-type]
        assert cm.get_node("n1").max_concurrent == 3


def test_without_strict_mode_unknown_fields_are_kept(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(_typo_node())  # type: ignore[arg-type]
        assert cm.get_node("n1").model_extra == {"maxconcurrent": 3}
