"""Every dynamic value through one set of methods, driven by :mod:`dapi_config.catalogue`: what
the HTTP routes, the CLI verbs and ``PATCH /state`` call (the typed methods of SPEC §5 stay)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel

from dapi_config._validation import etag_of_dump
from dapi_config.catalogue import KINDS, StateKind, document_value, kind_named
from dapi_config.errors import NotSupportedError, PreconditionFailedError, ValidationError
from dapi_config.manager._base import ManagerBase
from dapi_config.models import NodeVersion, UpgradePlan


def value_etag(value: BaseModel) -> str:
    """The ETag of a state value: a hash of what reads show."""
    return etag_of_dump(value.model_dump(mode="json"))


class StateKinds(ManagerBase):
    """Reads and writes of any state kind by name (``height``, ``seeds.current``, ...)."""

    def _kind(self, name: str) -> StateKind:
        try:
            return kind_named(name)
        except KeyError as exc:
            raise ValidationError(
                str(exc.args[0]), [{"field": "kind", "message": "unknown"}]
            ) from None

    def state_value(self, name: str) -> BaseModel:
        """The current value of the state kind ``name``. Raises :class:`ValidationError` for
        an unknown name."""
        kind = self._kind(name)
        with self._store.snapshot():
            return kind.read(self._store)

    def set_state_value(
        self, name: str, value: Any, *, if_match: Collection[str] | None = None
    ) -> BaseModel:
        """Replace the state kind ``name`` with ``value`` (validated as its input) in one
        transaction; returns the value now stored. ``if_match``: the ETags (see
        :func:`value_etag`) the caller accepts as the current value, ``"*"`` for any.
        Raises :class:`ValidationError`, :class:`PreconditionFailedError` (nothing written),
        :class:`NotSupportedError` for a kind that is not replaced whole."""
        kind = self._kind(name)
        if kind.write is None:
            raise NotSupportedError(f"{name} is not replaced whole; see its own operations")
        given = self._given(kind.input_model, value, name)
        with self._store.transaction():
            self._check_match(kind, if_match)
            kind.write(self._store, given)
            return kind.read(self._store)

    def clear_state_value(self, name: str, *, if_match: Collection[str] | None = None) -> BaseModel:
        """Clear the state kind ``name`` (the upgrade plan); returns the value now stored.
        Raises :class:`PreconditionFailedError`, :class:`NotSupportedError` (it has no
        clear)."""
        kind = self._kind(name)
        if kind.clear is None:
            raise NotSupportedError(f"{name} cannot be cleared")
        with self._store.transaction():
            self._check_match(kind, if_match)
            kind.clear(self._store)
            return kind.read(self._store)

    def _check_match(self, kind: StateKind, if_match: Collection[str] | None) -> None:
        if if_match is None or "*" in if_match:
            return
        etag = value_etag(kind.read(self._store))
        if etag not in if_match:
            raise PreconditionFailedError(
                f"{kind.name} changed since it was read (its ETag is now {etag}); read it "
                "again and retry. Nothing was written."
            )

    def patch_state(
        self, patch: Mapping[str, Any], *, if_revision: int | None = None
    ) -> dict[str, Any]:
        """Apply a JSON merge patch of the dynamic state (the keys of ``GET /state``) in one
        transaction: every part is validated first and the whole is refused on any bad part;
        ``if_revision``: refused (:class:`PreconditionFailedError`) unless the latest audit
        revision is still that. Returns the state summary after it."""
        changes = self.check_state_patch(patch)
        with self._store.transaction():
            if if_revision is not None and self._store.latest_revision() != if_revision:
                raise PreconditionFailedError(
                    f"the state changed since revision {if_revision} (it is now at "
                    f"{self._store.latest_revision()}); read it again and retry. Nothing was "
                    "written."
                )
            for kind, value in changes:
                assert kind.write is not None  # every kind in a document can be replaced
                kind.write(self._store, value)
        return self.state_summary()

    def check_state_patch(self, patch: Mapping[str, Any]) -> list[tuple[StateKind, BaseModel]]:
        """What :meth:`patch_state` would write, validated, writing nothing: (kind, value) per
        kind the patch touches. Raises :class:`ValidationError` naming every bad part."""
        if not isinstance(patch, Mapping):
            raise ValidationError(
                "expected a JSON object of state keys", [{"field": "", "message": "not an object"}]
            )
        current = self.state_summary()
        known = {kind.document_path[0] for kind in KINDS}
        unknown = sorted(set(patch) - known)
        nested = {kind.document_path[0] for kind in KINDS if len(kind.document_path) > 1}
        for key in nested & set(patch):
            inner = {kind.document_path[1] for kind in KINDS if kind.document_path[0] == key}
            given = patch[key]
            if not isinstance(given, Mapping):
                unknown.append(key)
            else:
                unknown.extend(f"{key}.{name}" for name in sorted(set(given) - inner))
        if unknown:
            raise ValidationError(
                f"not a writable state key: {', '.join(unknown)} "
                f"(one of {', '.join(sorted(known))})",
                [{"field": key, "message": "unknown state key"} for key in unknown],
            )
        changes: list[tuple[StateKind, BaseModel]] = []
        problems: list[dict[str, Any]] = []
        for kind in KINDS:
            try:
                part = document_value(patch, kind)
            except (KeyError, TypeError):
                continue
            value = _merged(document_value(current, kind), part)
            try:
                changes.append(
                    (kind, self._given(kind.input_model, kind.from_document(value), kind.name))
                )
            except ValidationError as exc:
                problems.extend(
                    {**item, "field": ".".join((*kind.document_path, item["field"])).rstrip(".")}
                    for item in exc.errors
                )
        if problems:
            raise ValidationError(
                "invalid state patch (nothing was written): "
                + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
                problems,
            )
        return changes

    def remove_node_version(self, height: int, version: str) -> bool:
        """Take ``version`` at ``height`` off the schedule; False when it was not scheduled."""
        target = self._given(NodeVersion, {"height": height, "version": version}, "node version")
        with self._store.transaction():
            schedule = self._store.node_versions()
            kept = [v for v in schedule if v != target]
            if len(kept) == len(schedule):
                return False
            self._store.replace_node_versions(kept)
            return True

    def clear_upgrade_plan(self) -> None:
        """Cancel the upgrade plan (it reads as the empty plan again)."""
        with self._store.transaction():
            self._store.set_upgrade_plan(UpgradePlan())


def _merged(current: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` merged into ``current`` (null removes a member)."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(current) if isinstance(current, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out
