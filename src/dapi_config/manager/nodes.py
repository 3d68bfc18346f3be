"""The node registry's reads and writes."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from dapi_config import documents, node_import
from dapi_config._validation import (
    check_etag,
    check_int,
    known_node_id,
    refuse_unknown_fields,
    sets_admin_state,
    validate_nodes,
    validated_node,
    with_admin_state_of,
)
from dapi_config.errors import (
    DuplicateNodeError,
    NodeNotFoundError,
    PreconditionFailedError,
    ValidationError,
)
from dapi_config.manager._base import ManagerBase
from dapi_config.models import (
    InferenceNodeConfig,
)
from dapi_config.secrets import has_new_token, keep_redacted_tokens

#: Largest page of nodes one :meth:`NodeRegistry.get_nodes_page` call returns.
MAX_NODE_PAGE = 10_000


class NodeRegistry(ManagerBase):
    """The inference-node registry (SPEC §5): reads, and writes that validate once, read the
    stored row once and seal tokens before the store sees them."""

    def get_nodes(self) -> list[InferenceNodeConfig]:
        """Every registered inference node, in registration order."""
        return self._store.nodes()

    def find_nodes(self, text: str) -> list[InferenceNodeConfig]:
        """The nodes whose id, address, models or version contain ``text`` (any case), in
        registration order: what ``nodes list --filter`` and the console's filter show."""
        return matching(self._store.nodes(), text)

    def remove_nodes(self, node_ids: Sequence[str]) -> list[InferenceNodeConfig]:
        """Remove several nodes (and their security keys), all or nothing; returns them.
        Raises :class:`NodeNotFoundError` (then none is removed)."""
        with self._store.transaction():
            return [self.remove_node(node_id) for node_id in node_ids]

    def get_node_count(self, *, enabled_only: bool = False) -> int:
        """How many nodes are registered (``enabled_only``: of them, enabled), counted
        without loading them."""
        return self._store.enabled_node_count() if enabled_only else self._store.node_count()

    def get_nodes_page(self, *, limit: int, after: str | None = None) -> list[InferenceNodeConfig]:
        """At most ``limit`` (1-10,000) nodes in registration order, after the node ``after``.
        Raises :class:`ValidationError` (bad limit), :class:`NodeNotFoundError` (unknown
        ``after``)."""
        limit = check_int(limit, "limit", 1, MAX_NODE_PAGE)
        return self._store.nodes_page(None if after is None else known_node_id(after), limit)

    def get_node(self, node_id: str) -> InferenceNodeConfig:
        """One node. Raises :class:`NodeNotFoundError`."""
        return self._store.node(known_node_id(node_id))

    def set_nodes(self, nodes: Iterable[InferenceNodeConfig]) -> None:
        """Replace the whole registry atomically.

        A node that stays and whose ``is_enabled`` is not given keeps its admin state, as the
        predecessor's update did (an operator's disabled node stays out of rotation).
        Raises :class:`ValidationError` or :class:`DuplicateNodeError` (nothing changed).
        """
        given = list(nodes)
        keep = {n.id for n in given if not sets_admin_state(n)}
        values = self._before_sealing(validate_nodes(given))
        # A bulk replace can wipe the registry with one call: back up first (SPEC §10).
        self.before_risky_operation("set-nodes")
        with self._store.transaction():
            values = keep_redacted_tokens(values, self._store)
            self._store.replace_nodes(self._secrets.seal_node_tokens(values), keep_admin_state=keep)

    def _before_sealing(self, values: list[InferenceNodeConfig]) -> list[InferenceNodeConfig]:
        """Derive the master key before the write transaction when ``values`` bring a token
        to seal (scrypt takes tens of ms: not while holding the writer lock); in strict mode,
        refuse a field no model knows first."""
        if self._strict:
            refuse_unknown_fields(values, "node" if len(values) == 1 else "nodes")
        if has_new_token(values):
            self._secrets.warm()
        return values

    def _stored(self, node_id: str) -> InferenceNodeConfig | None:
        try:
            return self._store.node(node_id)
        except NodeNotFoundError:
            return None

    def add_node(self, node: InferenceNodeConfig) -> InferenceNodeConfig:
        """Register a node; returns the stored node.

        Raises :class:`ValidationError`, :class:`DuplicateNodeError`.
        """
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            (value,) = self._secrets.seal_node_tokens(keep_redacted_tokens([value], self._store))
            self._store.add_node(value)
        return value

    def put_node(
        self, node: InferenceNodeConfig, *, if_match: Collection[str] | None = None
    ) -> tuple[InferenceNodeConfig, bool]:
        """Register ``node`` or replace the node with its id, in one transaction; returns the
        stored node and whether it was created (the predecessor's re-POST replaced a node).

        ``if_match`` as in :meth:`update_node`; given for an id that does not exist, it fails
        (:class:`PreconditionFailedError`). A replaced node keeps its admin state unless
        ``is_enabled`` is given (the predecessor's update kept it). Raises
        :class:`ValidationError`.
        """
        keep_state = not sets_admin_state(node)
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            current = self._stored(value.id)  # the one read of the row
            if current is None:
                if if_match is not None:
                    raise PreconditionFailedError(
                        f"node {value.id!r} does not exist, so no If-Match can hold; send the "
                        "request without If-Match to create it. Nothing was written."
                    )
                (value,) = keep_redacted_tokens([value], self._store, {value.id: None})
                (value,) = self._secrets.seal_node_tokens([value])
                self._store.add_node(value)
                return value, True
            value = self._replacing(current, value, if_match=if_match, keep_state=keep_state)
            self._store.update_node(value, old=current)
        return value, False

    def _replacing(
        self,
        current: InferenceNodeConfig,
        value: InferenceNodeConfig,
        *,
        if_match: Collection[str] | None,
        keep_state: bool,
    ) -> InferenceNodeConfig:
        """``value`` ready to replace ``current`` (read in this transaction): its ETag checked,
        a redacted token and (unless given) the admin state taken from it, its token sealed."""
        if if_match is not None:
            check_etag(current, if_match)
        (value,) = keep_redacted_tokens([value], self._store, {current.id: current})
        if keep_state:
            value = with_admin_state_of(current, value)
        (value,) = self._secrets.seal_node_tokens([value])
        return value

    def add_nodes(self, nodes: Iterable[InferenceNodeConfig]) -> list[InferenceNodeConfig]:
        """Register several nodes, all or nothing; returns the stored nodes."""
        values = self._before_sealing(validate_nodes(nodes))
        with self._store.transaction():
            values = keep_redacted_tokens(values, self._store)
            values = self._secrets.seal_node_tokens(values)
            self._store.add_nodes(values)
        return values

    def update_node(
        self, node: InferenceNodeConfig, *, if_match: Collection[str] | None = None
    ) -> InferenceNodeConfig:
        """Replace the node with the same id; returns the stored node.

        ``if_match``: the ETags (see :func:`node_etag`) the caller accepts as the current
        value, ``"*"`` for any; checked in the same transaction as the write. The node keeps
        its admin state unless ``is_enabled`` is given.
        Raises :class:`ValidationError`, :class:`NodeNotFoundError`,
        :class:`PreconditionFailedError` (stale ETag; nothing written).
        """
        keep_state = not sets_admin_state(node)
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            current = self._store.node(value.id)  # the one read of the row
            value = self._replacing(current, value, if_match=if_match, keep_state=keep_state)
            self._store.update_node(value, old=current)
        return value

    def remove_node(
        self, node_id: str, *, if_match: Collection[str] | None = None
    ) -> InferenceNodeConfig:
        """Remove a node; returns it.

        Raises :class:`NodeNotFoundError`, :class:`PreconditionFailedError` (stale ``if_match``,
        as in :meth:`update_node`).
        """
        node_id = known_node_id(node_id)
        with self._store.transaction():
            if if_match is not None:
                check_etag(self._store.node(node_id), if_match)
            return self._store.remove_node(node_id)

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig:
        """Enable or disable a node; returns it. Raises :class:`NodeNotFoundError`."""
        if not isinstance(enabled, bool):
            raise ValidationError(
                "enabled: expected true or false",
                [{"field": "enabled", "message": "expected a boolean"}],
            )
        node_id = known_node_id(node_id)
        with self._store.transaction():
            return self._store.set_node_enabled(node_id, enabled)

    def preview_nodes_import(
        self, path: str | os.PathLike[str], *, replace: bool = False, data: bytes | None = None
    ) -> list[str]:
        """What :meth:`import_nodes_file` would change, one line per node (empty: nothing).
        Changes nothing. Raises what the import raises for a bad file."""
        if data is None:
            incoming = node_import.read_node_file(Path(path))
        else:
            incoming = node_import.node_file_nodes(data, str(path))
        current = self._store.nodes()
        if replace:
            return documents.state_diff(None, current, None, incoming)
        known = {n.id for n in current}
        for node in incoming:
            if node.id in known:
                raise DuplicateNodeError(node.id)
        return documents.state_diff(None, current, None, [*current, *incoming])

    def import_nodes_file(
        self, path: str | os.PathLike[str], *, replace: bool = False, data: bytes | None = None
    ) -> list[InferenceNodeConfig]:
        """Merge a node file (JSON or YAML) into the registry, all or nothing (``replace``:
        substitute the whole registry). ``data``: the file's bytes, read already (stdin):
        ``path`` then only names them. Raises :class:`ConfigError`,
        :class:`DuplicateNodeError`."""
        if data is not None:
            return node_import.import_node_data(
                self._store,
                data,
                str(path),
                origin=str(path),
                replace=replace,
                before_risky_operation=self.before_risky_operation,
            )
        return node_import.import_node_file(
            self._store,
            Path(path),
            replace=replace,
            before_risky_operation=self.before_risky_operation,
        )


def matching(nodes: Iterable[InferenceNodeConfig], text: str) -> list[InferenceNodeConfig]:
    """The ``nodes`` whose id, address, models or version contain ``text`` (any case)."""
    needle = text.casefold()
    return [
        node
        for node in nodes
        if any(
            needle in field.casefold()
            for field in (node.id, node.host, node.base_url, node.url, node.version, *node.models)
        )
    ]


def page_of(
    nodes: list[InferenceNodeConfig], limit: int | None, after: str | None
) -> list[InferenceNodeConfig]:
    """At most ``limit`` of ``nodes``, after the node ``after`` (from the start when None).
    Raises :class:`NodeNotFoundError` when ``after`` is not among them."""
    if after is not None:
        ids = [n.id for n in nodes]
        if after not in ids:
            raise NodeNotFoundError(after)
        nodes = nodes[ids.index(after) + 1 :]
    return nodes if limit is None else nodes[:limit]
