"""The catalogue of state kinds (SPEC §15): every dynamic value declared once.

Each :class:`StateKind` says what a surface needs to know of one value: its name on the command
line (``seeds.current``), its route under ``/admin/v1/state/``, where ``GET /state`` and
``PATCH /state`` hold it, its model, how the store reads and writes it, and which writes it has
(replace, clear). The manager's typed methods (SPEC §5) stay, and the generic ones
(:meth:`~dapi_config.manager.ConfigManager.state_value` and the others) work from here; the HTTP
routes and the CLI verbs are derived from :data:`KINDS`, not written per kind. A new parameter
cache is one model in :data:`~dapi_config.models.PARAMS_MODELS`: its entry is made below.

The node registry and the keys have surfaces of their own (SPEC §8, §11); the schedule is a
collection (add, remove) besides being replaced whole by ``PATCH /state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from dapi_config.models import PARAMS_MODELS, NodeVersion, SeedInfo, UpgradePlan
from dapi_config.store.backend import SEED_KINDS, StateCore

#: The largest height (the predecessor's int64).
HEIGHT_MAX = 2**63 - 1


class Height(BaseModel):
    """The chain height and the node version current at it."""

    model_config = ConfigDict(defer_build=True)  # built on first use, as the models are

    height: int
    current_node_version: str


class HeightInput(BaseModel):
    """A new chain height (the schedule is applied with it, as ``set_height`` does)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    height: int = Field(ge=0, le=HEIGHT_MAX)


class Schedule(RootModel[list[NodeVersion]]):
    """The node-version schedule, by height."""

    model_config = ConfigDict(defer_build=True)


def as_is(value: Any) -> Any:
    """The default :attr:`StateKind.from_document`: the document part is the value."""
    return value


@dataclass(frozen=True)
class StateKind:
    """One dynamic value and how every surface reaches it."""

    #: Its name on the command line and in error messages (``params.validation``).
    name: str
    #: Its route under ``/admin/v1/state/`` (``params/validation``).
    path: str
    #: Where ``GET /state`` and ``PATCH /state`` hold it (``("seeds", "current")``).
    document_path: tuple[str, ...]
    #: The value as every surface shows it.
    model: type[BaseModel]
    #: What a replace takes (the value itself unless said otherwise).
    input_model: type[BaseModel]
    #: One line for the docs.
    summary: str
    read: Callable[[StateCore], BaseModel]
    #: Replace the value (in the caller's transaction); None: not replaced whole here.
    write: Callable[[StateCore, Any], object] | None = None
    #: Clear the value (DELETE); None: it cannot be cleared.
    clear: Callable[[StateCore], None] | None = None
    #: A collection with operations of its own (the schedule: add, remove), not replaced by a
    #: ``PUT`` of its own (``PATCH /state`` still replaces it whole).
    collection: bool = False
    #: Its part of a ``PATCH /state`` document as :attr:`input_model` data.
    from_document: Callable[[Any], Any] = as_is

    @property
    def operation(self) -> str:
        """The name routes and generated clients use (``params_validation``)."""
        return self.name.replace(".", "_").replace("-", "_")


def _height(store: StateCore) -> Height:
    # From the chain rows (not the hot cache): consistent with the rest of a snapshot.
    chain = store.chain_state()
    return Height(
        height=int(chain.get("current_height", 0)),
        current_node_version=chain.get("current_node_version", ""),
    )


def _seed_kind(kind: Any) -> StateKind:
    return StateKind(
        name=f"seeds.{kind}",
        path=f"seeds/{kind}",
        document_path=("seeds", kind),
        model=SeedInfo,
        input_model=SeedInfo,
        summary=f"The {kind} epoch seed",
        read=lambda store: store.seed(kind),
        write=lambda store, value: store.set_seed(kind, value),
    )


def _params_kind(kind: str, model: type[BaseModel]) -> StateKind:
    return StateKind(
        name=f"params.{kind}",
        path=f"params/{kind}",
        document_path=(f"{kind}_params",),
        model=model,
        input_model=model,
        summary=f"The cached {kind} parameters",
        read=lambda store: store.params(kind, model),
        write=lambda store, value: store.set_params(kind, value),
    )


KINDS: tuple[StateKind, ...] = (
    StateKind(
        name="height",
        path="height",
        document_path=("height",),
        model=Height,
        input_model=HeightInput,
        summary="The chain height (setting it applies the node-version schedule)",
        read=_height,
        write=lambda store, value: store.set_height(value.height),
        from_document=lambda value: {"height": value},
    ),
    StateKind(
        name="node-versions",
        path="node-versions",
        document_path=("node_versions",),
        model=Schedule,
        input_model=Schedule,
        summary="The node-version schedule",
        read=lambda store: Schedule(store.node_versions()),
        write=lambda store, value: store.replace_node_versions(value.root),
        collection=True,
    ),
    *(_seed_kind(kind) for kind in SEED_KINDS),
    *(_params_kind(kind, model) for kind, model in PARAMS_MODELS.items()),
    StateKind(
        name="upgrade-plan",
        path="upgrade-plan",
        document_path=("upgrade_plan",),
        model=UpgradePlan,
        input_model=UpgradePlan,
        summary="The upgrade plan",
        read=lambda store: store.upgrade_plan(),
        write=lambda store, value: store.set_upgrade_plan(value),
        clear=lambda store: store.set_upgrade_plan(UpgradePlan()),
    ),
)

BY_NAME: Mapping[str, StateKind] = {kind.name: kind for kind in KINDS}


def kind_named(name: str) -> StateKind:
    """The kind called ``name``; raises KeyError listing the names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no state kind {name!r}; one of: {', '.join(BY_NAME)}") from None


def put_in_document(document: dict[str, Any], kind: StateKind, value: BaseModel) -> None:
    """Place ``value`` where ``GET /state`` shows ``kind`` (the height with the node version
    current at it beside it, at the top)."""
    dumped = value.model_dump(mode="json")
    if isinstance(value, Height):
        document.update(dumped)
        return
    target = document
    for key in kind.document_path[:-1]:
        target = target.setdefault(key, {})
    target[kind.document_path[-1]] = dumped


def document_value(document: Mapping[str, Any], kind: StateKind) -> Any:
    """The part of a ``GET /state`` shaped document that holds ``kind`` (absent: KeyError)."""
    value: Any = document
    for key in kind.document_path:
        value = value[key]
    return value


__all__ = [
    "BY_NAME",
    "KINDS",
    "Height",
    "HeightInput",
    "Schedule",
    "StateKind",
    "as_is",
    "document_value",
    "kind_named",
    "put_in_document",
]
