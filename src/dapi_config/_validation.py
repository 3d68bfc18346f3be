"""Checking input before any write, and turning pydantic errors into the product's messages."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

from dapi_config.errors import (
    DuplicateNodeError,
    NodeNotFoundError,
    PreconditionFailedError,
    ValidationError,
)
from dapi_config.models import (
    LEGACY,
    LEGACY_NOTES,
    VALIDATION_ERRORS,
    InferenceNodeConfig,
    NodeInput,
    describe,
    error_items,
    is_valid_node_id,
)

INT64_MAX = 2**63 - 1

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate(model: type[ModelT], value: Any, what: str) -> ModelT:
    """``value`` as a ``model`` instance (a fresh copy), or :class:`ValidationError`."""
    try:
        if isinstance(value, BaseModel):
            value = _plain_with_secrets(value)
        return model.model_validate(value)
    except VALIDATION_ERRORS as exc:
        items = error_items(exc)
        raise ValidationError(f"invalid {what}: {describe(items)}", items) from None


def unknown_fields(value: BaseModel, prefix: str = "") -> list[dict[str, Any]]:
    """A problem for each field no model knows, anywhere in ``value`` (what its models keep
    as ``model_extra``), with the known field it was likely meant to be."""
    items: list[dict[str, Any]] = []
    for name in value.model_extra or {}:
        close = difflib.get_close_matches(name, type(value).model_fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        items.append(
            {"field": _field(prefix, name), "message": f"unknown field (strict mode){hint}"}
        )
    for name in type(value).model_fields:
        inner = getattr(value, name)
        children = (
            inner.items()
            if isinstance(inner, dict)
            else enumerate(inner)
            if isinstance(inner, list)
            else [(None, inner)]
        )
        for key, child in children:
            if isinstance(child, BaseModel):
                where = _field(prefix, name if key is None else f"{name}.{key}")
                items.extend(unknown_fields(child, where))
    return items


def refuse_unknown_fields(values: Iterable[BaseModel], what: str) -> None:
    """The strict mode's check of values given to a write: :class:`ValidationError` naming
    every unknown field (see :func:`unknown_fields`)."""
    items = [item for value in values for item in unknown_fields(value)]
    if items:
        raise ValidationError(f"invalid {what}: {describe(items)}", items)


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def validated_node(node: Any, what: str = "node") -> InferenceNodeConfig:
    """``node`` as an :class:`InferenceNodeConfig`, validated once: a model instance was
    validated when it was built and at every assignment (``validate_assignment``), so it is
    taken as it is (a client's :class:`NodeInput` as the plain model, without a second pass);
    anything else is validated. Raises :class:`ValidationError`."""
    if type(node) is InferenceNodeConfig:
        return node
    if isinstance(node, InferenceNodeConfig):
        return InferenceNodeConfig.model_construct(
            _fields_set=set(node.model_fields_set), **dict(node)
        )
    return validate(InferenceNodeConfig, node, what)


def _plain_with_secrets(value: BaseModel) -> dict[str, Any]:
    """``value`` as plain data for revalidation, its secret fields passed as the objects they
    are (a dump would redact them; a sealed token stays sealed)."""
    secret = {
        name: item
        for name in type(value).model_fields
        if isinstance(item := getattr(value, name, None), SecretStr)
    }
    return {**value.model_dump(exclude=set(secret)), **secret}


#: The field that holds a node's admin state (enabled or disabled by the operator).
ADMIN_STATE_FIELD = "is_enabled"


def kept_as_the_predecessor_accepted(node: InferenceNodeConfig) -> list[str]:
    """What of a stored ``node`` the rules for new input would refuse or note but the
    predecessor accepted (a host written as a URL, a node without its address), one note each;
    empty for a node new input could have written the same."""
    notes: list[str] = []
    try:
        InferenceNodeConfig.model_validate(
            _plain_with_secrets(node), context={LEGACY: True, LEGACY_NOTES: notes}
        )
    except VALIDATION_ERRORS as exc:  # stored, so valid when written: say what changed
        notes.append(describe(error_items(exc)))
    return notes


def sets_admin_state(node: Any) -> bool:
    """Whether a node given to a write names its admin state (a model whose ``is_enabled``
    was set). Not given, a replaced node keeps the stored one."""
    return not isinstance(node, BaseModel) or ADMIN_STATE_FIELD in node.model_fields_set


def with_admin_state_of(
    current: InferenceNodeConfig, node: InferenceNodeConfig
) -> InferenceNodeConfig:
    """``node`` with ``current``'s admin state."""
    if node.is_enabled == current.is_enabled:
        return node
    return node.model_copy(update={ADMIN_STATE_FIELD: current.is_enabled})


def node_etag(node: InferenceNodeConfig) -> str:
    """A strong HTTP entity tag of a node's stored value (quoted, as sent in ``ETag``)."""
    return etag_of_dump(node.model_dump(mode="json"))


def etag_of_dump(dumped: dict[str, Any]) -> str:
    """:func:`node_etag` of a node already dumped with ``model_dump(mode="json")`` (a reply
    that sends the dump does not dump it twice)."""
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32] + '"'


def known_node_id(node_id: Any) -> str:
    """``node_id`` if it could be registered; :class:`NodeNotFoundError` when it never could be
    (so odd input, e.g. an undecodable command-line byte, never reaches SQLite)."""
    if not isinstance(node_id, str):
        raise ValidationError(
            f"node id: expected a string, got {node_id!r}",
            [{"field": "id", "message": "expected a string", "input": repr(node_id)}],
        )
    if not is_valid_node_id(node_id):
        raise NodeNotFoundError(node_id)
    return node_id


def check_etag(current: InferenceNodeConfig, if_match: Collection[str]) -> None:
    if "*" in if_match:
        return
    etag = node_etag(current)
    if etag not in if_match:
        raise PreconditionFailedError(
            f"node {current.id!r} changed since it was read (its ETag is now {etag}); "
            "read it again and retry. Nothing was written."
        )


def validate_nodes(nodes: Iterable[Any]) -> list[InferenceNodeConfig]:
    """Validate a batch of nodes and reject duplicate ids within it."""
    if isinstance(nodes, (str, bytes, Mapping)) or not isinstance(nodes, Iterable):
        raise ValidationError(
            "nodes: expected a list of nodes", [{"field": "nodes", "message": "expected a list"}]
        )
    values: list[InferenceNodeConfig] = []
    seen: set[str] = set()
    for index, node in enumerate(nodes):
        try:
            value = validated_node(node, f"node #{index}")
        except ValidationError as exc:
            for item in exc.errors:
                item["field"] = f"nodes.{index}.{item['field']}"
            raise
        if value.id in seen:
            raise DuplicateNodeError(value.id, f"node {value.id!r} appears twice in the batch")
        seen.add(value.id)
        values.append(value)
    return values


def check_node_id(node_id: Any) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise ValidationError(
            f"node_id: expected a node id, got {node_id!r}",
            [{"field": "node_id", "message": "expected a non-empty string"}],
        )
    return node_id


def check_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"{field}: expected a whole number from {low} to {high}, got {value!r}",
            [{"field": field, "message": f"expected {low} to {high}", "input": repr(value)}],
        )
    return value


def check_height(height: Any, field: str) -> int:
    if isinstance(height, bool) or not isinstance(height, int):
        raise ValidationError(
            f"{field}: expected a whole number >= 0, got {height!r}",
            [{"field": field, "message": "expected an integer", "input": repr(height)}],
        )
    if not 0 <= height <= INT64_MAX:
        raise ValidationError(
            f"{field}: expected 0 to {INT64_MAX}, got {height}",
            [{"field": field, "message": "out of range", "input": height}],
        )
    return int(height)


def json_number(text: str) -> float | int:
    """A JSON number with a fraction or an exponent, as :func:`json.loads` hands it to
    ``parse_float``: an integral one (``5000.0``, ``5e3``) as the ``int`` it is, for the
    reason :func:`json_integers` gives; decoding with it spares the walk over the result."""
    value = float(text)
    return int(value) if value.is_integer() else value


def json_integers(value: Any) -> Any:
    """``value`` (decoded JSON) with every integral number as an ``int``: JSON has one number
    type and JSON Schema calls ``5000.0`` an integer, while strict validation takes only
    ``int`` for integer fields. ``5000.5``, ``"5000"`` and ``true`` stay what they are (and
    are refused there)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [json_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: json_integers(v) for k, v in value.items()}
    return value


def node_inputs(
    items: Sequence[Any], where: Callable[[int], str], notes: list[str] | None = None
) -> tuple[list[NodeInput], list[dict[str, Any]]]:
    """``items`` validated strictly as client input (:class:`NodeInput`): the valid nodes,
    and every problem with its field prefixed by ``where(index)`` (``nodes[1]``, ``1``).
    ``notes`` collects what was taken as the predecessor took it (a host that is a URL)."""
    nodes: list[NodeInput] = []
    problems: list[dict[str, Any]] = []
    context = None if notes is None else {LEGACY_NOTES: notes}
    for index, item in enumerate(items):
        try:
            nodes.append(NodeInput.model_validate(item, strict=True, context=context))
        except VALIDATION_ERRORS as exc:
            problems.extend(error_items(exc, prefix=where(index)))
    return nodes, problems
