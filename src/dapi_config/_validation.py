"""Turning pydantic errors into the product's messages."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from dapi_config.errors import ValidationError
from dapi_config.security import REDACTED, SECRET_FIELDS

ModelT = TypeVar("ModelT", bound=BaseModel)


def error_items(exc: pydantic.ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """``[{"field": "a.b", "message": "...", "input": ...}]`` for each problem."""
    items: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        message = str(err["msg"]).removeprefix("Value error, ")
        item: dict[str, Any] = {"field": field, "message": message}
        if err["type"] not in ("missing", "value_error"):
            # A secret's bad value must not be echoed into messages, logs or HTTP bodies.
            secret = any(str(p) in SECRET_FIELDS for p in err["loc"])
            item["input"] = REDACTED if secret else _short(err.get("input"))
        items.append(item)
    return items


def describe(items: list[dict[str, Any]]) -> str:
    """One line per problem: ``field: message (got value)``."""
    parts = []
    for item in items:
        got = f" (got {item['input']!r})" if "input" in item else ""
        parts.append(f"{item['field'] or 'value'}: {item['message']}{got}")
    return "; ".join(parts)


def _short(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    return value


def validate(model: type[ModelT], value: Any, what: str) -> ModelT:
    """``value`` as a ``model`` instance (a fresh copy), or :class:`ValidationError`."""
    try:
        if isinstance(value, model):
            return model.model_validate(value.model_dump())
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        items = error_items(exc)
        raise ValidationError(f"invalid {what}: {describe(items)}", items) from None
