"""``RemoteConfigManager``: the read and write methods of :class:`~dapi_config.ConfigManager`
(SPEC §5, §15) over a served state's admin API, for a process on another machine or in another
container. The same models come back and the same typed errors are raised (mapped back from
each reply's ``code``); ``with remote.transaction():`` collects the value writes inside it and
sends them as one ``PATCH /admin/v1/state`` (all or nothing, guarded by the revision read when
it began).

What stays local to the service: secrets (the worker key's private half and node tokens read
``<redacted>``), backups, the audit trail's admin and periodic exports.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from dapi_config import errors
from dapi_config._validation import check_height, validate, validate_nodes, validated_node
from dapi_config.catalogue import Height, Schedule
from dapi_config.models import (
    PARAMS_MODELS,
    REVEAL_SECRETS,
    ApiConfig,
    BandwidthParamsCache,
    ChainNodeConfig,
    InferenceNodeConfig,
    MLNodeKeyConfig,
    NatsServerConfig,
    NodeVersion,
    PoCParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.tls import client_context

ModelT = TypeVar("ModelT", bound=BaseModel)


ADMIN = "/admin/v1"
MERGE_PATCH = "application/merge-patch+json"


def _error_classes() -> dict[str, type[errors.DapiConfigError]]:
    found: dict[str, type[errors.DapiConfigError]] = {}
    pending: list[type[errors.DapiConfigError]] = [errors.DapiConfigError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


_ERRORS = _error_classes()


def _node_body(node: InferenceNodeConfig) -> dict[str, Any]:
    """A checked node as the service takes it; its admin state only when the caller set it
    (else the service keeps the stored one, as the library's update does)."""
    body = dict(_as_dict(node))
    if "is_enabled" not in node.model_fields_set:
        body.pop("is_enabled", None)
    return body


def _as_dict(value: Any) -> Any:
    """A checked value as the JSON the service takes (a node's token in clear: the service
    seals it; ``<redacted>`` stands for the stored one, as a read shows it)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", context=REVEAL_SECRETS)
    return value


class RemoteConfigManager:
    """A :class:`~dapi_config.ConfigManager` of a state served by ``dapi-config serve`` at
    ``url`` (``http://127.0.0.1:9200``, ``https://...`` when it serves TLS), with a
    ``token`` when it needs one (``api.admin_token`` or a scoped token).

    Over HTTPS the server's certificate is verified against ``ca`` (a PEM file; None: the
    system's trust store) and its host name; ``cert`` is the client certificate for a server
    that requires one: a PEM file holding certificate and key, or a ``(cert, key)`` pair.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        ca: str | os.PathLike[str] | None = None,
        cert: str
        | os.PathLike[str]
        | tuple[str | os.PathLike[str], str | os.PathLike[str]]
        | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        cert_file, key_file = cert if isinstance(cert, tuple) else (cert, None)
        verify = (
            client_context(ca, cert_file, key_file) if url.lower().startswith("https:") else True
        )
        self._http = httpx.Client(
            base_url=url.rstrip("/") + ADMIN,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=verify,
        )
        self._batch = threading.local()

    # --- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._http.close()

    def __enter__(self) -> RemoteConfigManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """The reply to one request; an error reply raised as the library raises it (its
        ``code`` names the class), except the statuses in ``allow``."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.StateUnavailableError(
                f"{self._http.base_url}: cannot reach the service: {exc}"
            ) from None
        if response.is_success or response.status_code in allow:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = str(body.get("error") or f"HTTP {response.status_code}")
        code = str(body.get("code") or "")
        if code == "validation_error":
            raise errors.ValidationError(message, list(body.get("errors") or []))
        cls = _ERRORS.get(code)
        if cls is None:
            if response.status_code == 401:
                raise errors.ConfigError(f"the service refused the admin token: {message}")
            raise errors.StateUnavailableError(f"HTTP {response.status_code}: {message}")
        error = cls.__new__(cls)
        errors.DapiConfigError.__init__(error, message)
        if "node_id" in body or issubclass(
            cls, errors.NodeNotFoundError | errors.DuplicateNodeError
        ):
            error.node_id = str(body.get("node_id", ""))  # type: ignore[attr-defined]
        raise error

    def _get(self, path: str, model: type[ModelT]) -> ModelT:
        return model.model_validate(self._call("GET", path).json())

    def _put(self, path: str, value: Any) -> httpx.Response:
        return self._call("PUT", path, json=_as_dict(value))

    # --- transactions: value writes batched into one PATCH ------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Collect the value writes made inside the block (height, seeds, parameters, plan)
        and send them as one ``PATCH /state``: applied together or not at all, refused when
        the state changed since the block began (:class:`PreconditionFailedError`). Node and
        schedule writes are not batched (:class:`NotSupportedError` inside the block)."""
        if getattr(self._batch, "patch", None) is not None:
            yield  # nested: joins the outer batch
            return
        etag = self._call("GET", "/state").headers.get("ETag", "")
        self._batch.patch = {}
        try:
            yield
            patch = self._batch.patch
        finally:
            self._batch.patch = None
        if patch:
            self._call(
                "PATCH",
                "/state",
                json=patch,
                headers={"Content-Type": MERGE_PATCH, **({"If-Match": etag} if etag else {})},
            )

    def _batched(self, *path_and_value: Any) -> bool:
        """Put a value write into the open batch; False when there is none."""
        patch = getattr(self._batch, "patch", None)
        if patch is None:
            return False
        *keys, value = path_and_value
        target = patch
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = _as_dict(value)
        return True

    def _not_in_batch(self, what: str) -> None:
        if getattr(self._batch, "patch", None) is not None:
            raise errors.NotSupportedError(
                f"{what} is not part of a remote transaction (it is sent at once)"
            )

    # --- static reads ----------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return dict(self._call("GET", "/config").json())

    def get_api_config(self) -> ApiConfig:
        """The service's ``api`` section (the admin token redacted)."""
        return ApiConfig.model_validate(self._config().get("api") or {})

    def get_chain_node_config(self) -> ChainNodeConfig:
        """The service's ``chain_node`` section (no keyring password)."""
        return ChainNodeConfig.model_validate(self._config().get("chain_node") or {})

    def get_nats_config(self) -> NatsServerConfig:
        """The service's ``nats`` section."""
        return NatsServerConfig.model_validate(self._config().get("nats") or {})

    def get_ml_node_key_config(self) -> MLNodeKeyConfig:
        """The worker key pair: the public key, the private one ``<redacted>``."""
        return MLNodeKeyConfig.model_validate(self._config().get("ml_node_key_config") or {})

    # --- dynamic reads ---------------------------------------------------------------------

    def get_height(self) -> int:
        """The chain height."""
        return self._get("/state/height", Height).height

    def get_current_node_version(self) -> str:
        """The current node version."""
        return self._get("/state/height", Height).current_node_version

    def get_node_versions(self) -> list[NodeVersion]:
        """The node-version schedule, by height."""
        return self._get("/state/node-versions", Schedule).root

    def get_current_seed(self) -> SeedInfo:
        return self._get("/state/seeds/current", SeedInfo)

    def get_previous_seed(self) -> SeedInfo:
        return self._get("/state/seeds/previous", SeedInfo)

    def get_upcoming_seed(self) -> SeedInfo:
        return self._get("/state/seeds/upcoming", SeedInfo)

    def get_validation_params(self) -> ValidationParamsCache:
        return self._get("/state/params/validation", ValidationParamsCache)

    def get_bandwidth_params(self) -> BandwidthParamsCache:
        return self._get("/state/params/bandwidth", BandwidthParamsCache)

    def get_poc_params(self) -> PoCParamsCache:
        return self._get("/state/params/poc", PoCParamsCache)

    def get_upgrade_plan(self) -> UpgradePlan:
        return self._get("/state/upgrade-plan", UpgradePlan)

    def get_nodes(self) -> list[InferenceNodeConfig]:
        """Every node, in registration order (tokens ``<redacted>``)."""
        items = self._call("GET", "/nodes").json()
        return [InferenceNodeConfig.model_validate(item["node"]) for item in items]

    def get_node(self, node_id: str) -> InferenceNodeConfig:
        """One node; raises :class:`NodeNotFoundError`."""
        return self._get(f"/nodes/{_segment(node_id)}", InferenceNodeConfig)

    # --- value writes ----------------------------------------------------------------------

    def set_height(self, height: int) -> None:
        """Store the height (the schedule is applied with it, as the service's set_height)."""
        height = check_height(height, "height")
        if not self._batched("height", height):
            self._put("/state/height", {"height": height})

    def _set_seed(self, kind: str, seed: SeedInfo | Mapping[str, Any]) -> None:
        seed = validate(SeedInfo, seed, f"{kind} seed")  # as the library checks it
        if not self._batched("seeds", kind, seed):
            self._put(f"/state/seeds/{kind}", seed)

    def set_current_seed(self, seed: SeedInfo) -> None:
        self._set_seed("current", seed)

    def set_previous_seed(self, seed: SeedInfo) -> None:
        self._set_seed("previous", seed)

    def set_upcoming_seed(self, seed: SeedInfo) -> None:
        self._set_seed("upcoming", seed)

    def rotate_seeds(self) -> None:
        """Epoch change: previous <- current <- upcoming, upcoming cleared."""
        self._not_in_batch("rotate_seeds")
        self._call("POST", "/state/seeds/rotate")

    def _set_params(self, kind: str, params: Any) -> None:
        params = validate(PARAMS_MODELS[kind], params, f"{kind} params")
        if not self._batched(f"{kind}_params", params):
            self._put(f"/state/params/{kind}", params)

    def set_validation_params(self, params: ValidationParamsCache) -> None:
        self._set_params("validation", params)

    def set_bandwidth_params(self, params: BandwidthParamsCache) -> None:
        self._set_params("bandwidth", params)

    def set_poc_params(self, params: PoCParamsCache) -> None:
        self._set_params("poc", params)

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        plan = validate(UpgradePlan, plan, "upgrade plan")
        if not self._batched("upgrade_plan", plan):
            self._put("/state/upgrade-plan", plan)

    def clear_upgrade_plan(self) -> None:
        """Cancel the upgrade plan."""
        self._not_in_batch("clear_upgrade_plan")
        self._call("DELETE", "/state/upgrade-plan")

    def add_node_version(self, height: int, version: str) -> bool:
        """Schedule ``version`` at ``height``; False when it was scheduled already."""
        self._not_in_batch("add_node_version")
        entry = validate(NodeVersion, {"height": height, "version": version}, "node version")
        body = entry.model_dump(mode="json")
        return self._call("POST", "/state/node-versions", json=body).status_code == 201

    def remove_node_version(self, height: int, version: str) -> bool:
        """Take ``version`` at ``height`` off the schedule; False when it was not there."""
        self._not_in_batch("remove_node_version")
        path = f"/state/node-versions/{int(height)}/{_segment(version)}"
        return self._call("DELETE", path, allow=(404,)).status_code == 200

    def create_worker_key(self) -> str:
        """A new worker key pair, stored by the service; returns the public key."""
        self._not_in_batch("create_worker_key")
        return str(self._call("POST", "/state/worker-key").json()["worker_public"])

    # --- node writes -----------------------------------------------------------------------

    def set_nodes(self, nodes: Iterable[InferenceNodeConfig | Mapping[str, Any]]) -> None:
        """Replace the whole registry in one transaction."""
        self._not_in_batch("set_nodes")
        checked = validate_nodes(nodes)
        self._call("PUT", "/nodes", json=[_node_body(n) for n in checked])

    def add_node(self, node: InferenceNodeConfig | Mapping[str, Any]) -> InferenceNodeConfig:
        """Register a node; raises :class:`DuplicateNodeError` for a registered id."""
        self._not_in_batch("add_node")
        body = [_node_body(validated_node(node))]
        try:
            (stored,) = self._call("POST", "/nodes/batch", json=body).json()
        except errors.DuplicateNodeError:
            raise errors.DuplicateNodeError(body[0]["id"]) from None
        return InferenceNodeConfig.model_validate(stored)

    def add_nodes(
        self, nodes: Iterable[InferenceNodeConfig | Mapping[str, Any]]
    ) -> list[InferenceNodeConfig]:
        """Register several nodes, all or nothing."""
        self._not_in_batch("add_nodes")
        body = [_node_body(n) for n in validate_nodes(nodes)]
        stored = self._call("POST", "/nodes/batch", json=body).json()
        return [InferenceNodeConfig.model_validate(n) for n in stored]

    def update_node(self, node: InferenceNodeConfig | Mapping[str, Any]) -> InferenceNodeConfig:
        """Replace the node with the same id; raises :class:`NodeNotFoundError`."""
        self._not_in_batch("update_node")
        data = _node_body(validated_node(node))
        node_id = str(data.get("id", ""))
        try:
            response = self._call(
                "PUT", f"/nodes/{_segment(node_id)}", json=data, headers={"If-Match": "*"}
            )
        except errors.PreconditionFailedError:
            raise errors.NodeNotFoundError(node_id) from None  # "*" holds for any node there
        return InferenceNodeConfig.model_validate(response.json())

    def remove_node(self, node_id: str) -> InferenceNodeConfig:
        """Remove a node; returns it. Raises :class:`NodeNotFoundError`."""
        self._not_in_batch("remove_node")
        return InferenceNodeConfig.model_validate(
            self._call("DELETE", f"/nodes/{_segment(node_id)}").json()
        )

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig:
        """Enable or disable a node; returns it."""
        self._not_in_batch("set_node_enabled")
        if not isinstance(enabled, bool):
            raise errors.ValidationError(
                "enabled: expected true or false",
                [{"field": "enabled", "message": "expected a boolean"}],
            )
        action = "enable" if enabled else "disable"
        self._call("POST", f"/nodes/{_segment(node_id)}/{action}")
        return self.get_node(node_id)

    # --- exports ---------------------------------------------------------------------------

    def export_full_config(self) -> dict[str, Any]:
        """The merged configuration in the legacy layout, secrets redacted."""
        return dict(self._call("GET", "/config/export").json())

    def state_summary(self) -> dict[str, Any]:
        """What ``GET /admin/v1/state`` answers."""
        return dict(self._call("GET", "/state").json())


def _segment(text: str) -> str:
    return httpx.URL(path=str(text)).raw_path.decode("ascii").replace("/", "%2F")


__all__ = ["RemoteConfigManager"]
