"""Pydantic models of the static configuration and the dynamic state.

Field names are the YAML keys of the predecessor's single-file config, so a model dumps to the
legacy layout unchanged. This module does no I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core import ValidationError as PydanticValidationError

from dapi_config.errors import ValidationError

Port = Annotated[int, Field(ge=1, le=65535, description="TCP port, 1-65535")]
#: A node's port: 1-65535, or 0 (none) for a node reached at a base URL.
OptionalPort = Annotated[int, Field(ge=0, le=65535, description="TCP port, 1-65535 (0: none)")]
NonNegativeInt = Annotated[int, Field(ge=0)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: Go's uint64 (a seed's ``epoch_index``): the full range 0 ... 2**64 - 1.
Uint64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
#: What reads and exports show in place of a secret; given back in a write, it keeps the secret.
REDACTED = "<redacted>"
#: ``model_dump(context=REVEAL_SECRETS)`` writes secrets in clear (rollback files only).
REVEAL_SECRETS = {"reveal_secrets": True}
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)

# Limits on what one node may hold (SPEC §9): far above any real node, low enough that one
# request cannot make the registry, its audit trail or a reply huge.
#: Models one node serves.
MAX_MODELS = 256
#: Arguments of one model, and the length of each.
MAX_MODEL_ARGS = 256
MAX_ARG_LENGTH = 4096
#: Hardware items of one node.
MAX_HARDWARE = 64
#: Model names, versions, URL segments, Hugging Face repos and commits.
MAX_NAME_LENGTH = 256
#: Base URLs and 2024-era URLs.
MAX_URL_LENGTH = 2048
#: Bearer tokens.
MAX_TOKEN_LENGTH = 4096

#: No control characters (CR, LF, NUL, tabs...): a value may end up in a URL, a header or a log.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
Text = Annotated[str, Field(max_length=MAX_NAME_LENGTH, pattern=PRINTABLE_PATTERN)]
#: Text of any length without control characters (they are header and log injection, and a
#: NUL cannot be stored in PostgreSQL's text).
Printable = Annotated[str, Field(pattern=PRINTABLE_PATTERN)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=PRINTABLE_PATTERN)
]
Arg = Annotated[str, Field(max_length=MAX_ARG_LENGTH, pattern=PRINTABLE_PATTERN)]

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    rf"(?:(?:{_H16}:){{7}}{_H16}|(?:{_H16}:){{1,7}}:|(?:{_H16}:){{1,6}}:{_H16}"
    rf"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    rf"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    rf"|{_H16}:(?::{_H16}){{1,6}}|:(?:(?::{_H16}){{1,7}}|:))"
)
#: A node's host: a DNS name (labels of letters, digits, ``-``, ``_``; dotted IPv4 addresses
#: are such names too) or an IPv6 address, bare or in brackets. Nothing else: no scheme, no
#: port, no spaces or control characters (it ends up in URLs and headers).
HOST_PATTERN = rf"^(?:|{_LABEL}(?:\.{_LABEL})*\.?|{_IPV6}|\[{_IPV6}\])$"
_HOST_RE = re.compile(HOST_PATTERN)
#: What a host may be at all: any text without spaces or control characters. The
#: predecessor's admin API took any string, and its own clients send a URL there
#: (testermint's ``host = "http://localhost:8080"``): such a host is stored as given and
#: noted; what cannot be in a URL or a header (spaces, CR, LF, NUL...) is refused.
HOST_TEXT_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: A base URL: ``scheme://host[:port][/path...]``, no spaces or control characters.
URL_PATTERN = (
    r"^(?:|[A-Za-z][A-Za-z0-9+.-]*://(?:[^\x00-\x20\x7f-\x9f\u2028\u2029/?#@:\[\]]+"
    rf"|\[{_IPV6}\])(?::{_PORT})?(?:[/?#][^\x00-\x20\x7f-\x9f\u2028\u2029]*)?)$"
)
UrlText = Annotated[str, Field(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)]

#: Field names whose values are secrets: never echoed in error messages, logs or audit rows.
SECRET_FIELDS = frozenset(
    {
        "admin_token",
        "keyring_password",
        "KeyringPassword",
        "worker_private",
        "security_key",
        "auth_token",
    }
)


# --- the product's errors for pydantic's ------------------------------------------------------

_PATTERN_MESSAGES = {
    PRINTABLE_PATTERN: "control characters (CR, LF, NUL, tabs, ...) are not allowed",
    HOST_TEXT_PATTERN: "expected a host name or an IP address (no spaces or control characters)",
    URL_PATTERN: "expected a URL such as http://host:port (a port of 1-65535, no spaces)",
}


def error_items(
    exc: PydanticValidationError | ValidationError, prefix: str = ""
) -> list[dict[str, Any]]:
    """``[{"field": "a.b", "message": "...", "input": ...}]`` for each problem (a regex in
    pydantic's message becomes words; a secret's value is never echoed)."""
    if isinstance(exc, ValidationError):  # one of ours already: only the prefix is new
        return [{**item, "field": _joined(prefix, item["field"])} for item in exc.errors]
    items: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
        message = str(err["msg"]).removeprefix("Value error, ")
        message = _PATTERN_MESSAGES.get(str((err.get("ctx") or {}).get("pattern")), message)
        item: dict[str, Any] = {"field": _joined(prefix, loc), "message": message}
        if err["type"] not in ("missing", "value_error"):
            secret = any(str(p) in SECRET_FIELDS for p in err["loc"])
            item["input"] = REDACTED if secret else _short(err.get("input"))
        items.append(item)
    return items


def _joined(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix and field else (prefix or field)


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


#: What validating a value may raise: pydantic's error (its own models, type adapters) or ours
#: (the product's models, see :class:`_Model`); :func:`error_items` reads both.
VALIDATION_ERRORS = (PydanticValidationError, ValidationError)


def _ours(exc: PydanticValidationError, what: str) -> ValidationError:
    items = error_items(exc)
    return ValidationError(f"invalid {what}: {describe(items)}", items)


class _Model(BaseModel):
    """The product's models raise :class:`dapi_config.ValidationError` (friendly text, the
    problems in ``errors``), built, validated or assigned to, as the manager's writes do:
    one error type for a library user, whatever the path.

    Each model's validator is built on its first use, not when the module is imported: a
    command that validates nothing (``status``, ``--help``) does not pay for building them."""

    model_config = ConfigDict(defer_build=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise _ours(exc, type(self).__name__) from None

    # Still pydantic's own __init__ for its validation of nested models: a model that
    # overrides __init__ is otherwise called from inside validation (slower, and twice).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except PydanticValidationError as exc:
            raise _ours(exc, f"{type(self).__name__}.{name}") from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except PydanticValidationError as exc:
            raise _ours(exc, cls.__name__) from None

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any
    ) -> Self:
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except PydanticValidationError as exc:
            raise _ours(exc, cls.__name__) from None

    @classmethod
    def model_validate_strings(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate_strings(obj, *args, **kwargs)
        except PydanticValidationError as exc:
            raise _ours(exc, cls.__name__) from None


def _check_url(value: str) -> str:
    if value == "":
        return value
    parsed = urlparse(value)
    if not parsed.scheme or not parsed.netloc:
        raise ValueError(f"expected a URL such as http://host:port, got {value!r}")
    try:
        parsed.port  # noqa: B018 - raises on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(f"expected a URL with a valid port, got {value!r}") from None
    return value


class _Section(_Model):
    """A static YAML section: unknown keys are kept (and warned about by the loader)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


# --- static configuration (YAML) -------------------------------------------------------------


class ApiConfig(_Section):
    """The ``api`` section: the node's own listeners and callback addresses."""

    port: Port = 8080
    poc_callback_url: str = ""
    ml_grpc_callback_address: str = ""
    public_url: str = ""
    public_server_port: Port = 9000
    ml_server_port: Port = 9100
    admin_server_port: Port = 9200
    ml_grpc_server_port: Port = 9300
    test_mode: bool = False
    admin_token: SecretStr | None = Field(
        default=None, description="When set, every /admin/v1 route needs this bearer token."
    )
    admin_token_file: str | None = Field(
        default=None,
        description="A file holding the admin token (a mounted secret), instead of admin_token.",
    )
    tls_cert: str | None = Field(
        default=None, description="PEM certificate (chain): the admin API serves HTTPS only."
    )
    tls_key: str | None = Field(default=None, description="PEM private key of tls_cert.")
    tls_client_ca: str | None = Field(
        default=None,
        description="PEM CA: clients must present a certificate it signed (mutual TLS).",
    )

    # poc_callback_url is not checked: every Go binary accepted any text there (``localhost``
    # in real files); the loader warns when it is not a URL.
    _urls = field_validator("public_url")(_check_url)

    @field_validator("admin_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        token = None if value is None else value.get_secret_value()
        if not token:
            return None  # "" is no token, as before
        if token != token.strip():
            # HTTP strips a header value's surrounding spaces: such a token never matches.
            raise ValueError(
                "the admin token starts or ends with whitespace (or is only whitespace); "
                "no request could ever match it"
            )
        return value


class ChainNodeConfig(_Section):
    """The ``chain_node`` section. ``keyring_password`` comes only from the environment."""

    url: str = ""
    is_genesis: bool = False
    seed_api_url: str = ""
    account_public_key: str = ""
    signer_key_name: str = ""
    keyring_backend: str = ""
    keyring_dir: str = ""
    keyring_password: SecretStr | None = Field(default=None, exclude=True)

    _urls = field_validator("url", "seed_api_url")(_check_url)


class MLNodeKeyConfig(_Section):
    """The ``ml_node_key_config`` section: the worker's Ed25519 key pair, base64."""

    worker_public: str = ""
    worker_private: str = ""


class NatsServerConfig(_Section):
    """The ``nats`` section."""

    host: str = ""
    port: Port = 4222


class StaticConfig(_Model):
    """The whole static file. Unknown top-level keys are kept in ``model_extra``."""

    model_config = ConfigDict(extra="allow")

    api: ApiConfig = Field(default_factory=ApiConfig)
    chain_node: ChainNodeConfig = Field(default_factory=ChainNodeConfig)
    ml_node_key_config: MLNodeKeyConfig = Field(default_factory=MLNodeKeyConfig)
    nats: NatsServerConfig = Field(default_factory=NatsServerConfig)


STATIC_SECTIONS: tuple[str, ...] = ("api", "chain_node", "ml_node_key_config", "nats")


# --- dynamic state (SQLite) ------------------------------------------------------------------


class _State(_Model):
    """A dynamic entry. Fields the model does not know are kept (``model_extra``), stored and
    returned unchanged: a predecessor's later fields are never dropped. The HTTP API refuses
    unknown fields on input (a typo there is an error, see ``api.nodes``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class _Exact(_Model):
    """A value with a fixed shape (a schedule entry): unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SeedInfo(_State):
    """One epoch seed. The all-zero value means "unset"."""

    seed: Int64 = 0
    epoch_index: Uint64 = 0
    signature: Printable = ""
    claimed: StrictBool = False


class ValidationParamsCache(_State):
    """Cached chain validation parameters."""

    timestamp_expiration: Int64 = 0
    timestamp_advance: Int64 = 0
    expiration_blocks: Int64 = 0
    logprobs_mode: Printable = ""


class BandwidthParamsCache(_State):
    """Cached chain bandwidth parameters."""

    estimated_limits_per_block_kb: NonNegativeInt = 0
    kb_per_input_token: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    kb_per_output_token: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_inferences_per_block: Uint64 = 0


class PoCModelParams(_State):
    """One model of the cached proof-of-compute parameters."""

    model_id: Printable = ""
    seq_len: Int64 = 0


def _null_or_list(schema: dict[str, Any]) -> None:
    # What the validator below takes: null (Go's nil slice) reads as the empty list.
    items = schema.pop("items")
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "array", "items": items}, {"type": "null"}]


class PoCParamsCache(_State):
    """Cached chain proof-of-compute parameters (the predecessor's later ``poc_params``)."""

    models: list[PoCModelParams] = Field(default_factory=list, json_schema_extra=_null_or_list)

    @field_validator("models", mode="before")
    @classmethod
    def _models_none(cls, value: Any) -> Any:
        return [] if value is None else value


#: The parameter caches by the name the state stores them under.
PARAMS_MODELS: dict[str, type[_State]] = {
    "validation": ValidationParamsCache,
    "bandwidth": BandwidthParamsCache,
    "poc": PoCParamsCache,
}


#: A chain height: the predecessor's int64, never negative (over HTTP a client sets at most
#: 2**53 - 1, see ``api.kinds``).
ChainHeight = Annotated[int, Field(ge=0, le=2**63 - 1)]


class NodeVersion(_Exact):
    """One entry of the node-version schedule: ``version`` becomes current at ``height``."""

    height: ChainHeight
    version: Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE_PATTERN)]


class UpgradePlan(_State):
    """A pending chain upgrade. The empty plan (no name) means "none"."""

    name: Printable = ""
    height: ChainHeight = 0
    binaries: dict[Printable, Printable] = Field(default_factory=dict)
    node_version: Printable = ""


class ModelOverride(_State):
    """A model served from another Hugging Face repository and commit (later eras)."""

    hf_repo: Text = ""
    hf_commit: Text = ""


class ModelConfig(_State):
    """Arguments for one model on an inference node. Accepts the Go writer's ``Args`` key."""

    args: list[Arg] = Field(
        default_factory=list,
        max_length=MAX_MODEL_ARGS,
        validation_alias=AliasChoices("args", "Args"),
    )
    model_override: ModelOverride | None = None

    @model_serializer(mode="wrap")
    def _omit_empty_override(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As the predecessor's ``json:"model_override,omitempty"``: absent when unset.
        data: dict[str, Any] = handler(self)
        if data.get("model_override", ...) is None:
            del data["model_override"]
        return data

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data


class Hardware(_State):
    """A hardware item of an inference node, e.g. ``{type: H100, count: 8}``."""

    type: Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE_PATTERN)]
    count: Annotated[int, Field(ge=0, le=2**32 - 1)]


#: Validation context key: the value comes from something the predecessor wrote or accepted
#: (a legacy file of any era, its ``gonka.db``, a node file). Such values are read as its Go
#: decoder read them: what it accepted is kept as it was and noted under ``LEGACY_NOTES``
#: (a list in the same context), never refused; control characters stay refused. New input
#: (the API, the CLI, the library) is validated strictly: a node needs its address, and its
#: host no spaces (a host that is no DNS name or IP address is noted, as for the predecessor's
#: own clients, which send a URL there).
LEGACY = "legacy"
LEGACY_NOTES = "legacy_notes"
_PRINTABLE_RE = re.compile(PRINTABLE_PATTERN)


def from_predecessor(info: ValidationInfo) -> bool:
    """Whether this validation reads a value the predecessor wrote or accepted."""
    return bool(info.context and info.context.get(LEGACY))


def note_kept(info: ValidationInfo, note: str) -> None:
    """Record that a value the strict rules refuse was kept as the predecessor took it."""
    if info.context is not None and isinstance(info.context.get(LEGACY_NOTES), list):
        info.context[LEGACY_NOTES].append(note)


_ADDRESS_REQUIRED = PydanticCustomError(
    "node_address",
    "required: a node needs host, inference_port and poc_port (1-65535), or a base_url",
)


class InferenceNodeConfig(_State):
    """One inference node of the registry.

    A node is reached at ``host`` and its two ports, or — in the predecessor's later
    ``base_url`` mode, and its 2024 ``url`` era — at a base URL, and then host and ports are
    optional (0 = none). ``auth_token`` is a secret: sealed at rest, shown as ``<redacted>``.
    """

    id: Annotated[str, Field(pattern=NODE_ID_PATTERN, description="1-128 of A-Z a-z 0-9 . _ : @ -")]
    host: Annotated[
        str,
        Field(
            max_length=253,
            pattern=HOST_TEXT_PATTERN,
            description="a DNS name or an IP address (no scheme, no port); other text without "
            "spaces, as the predecessor took it (a URL, host:port), is stored as given and "
            "noted in the service's log",
        ),
    ] = ""
    inference_segment: Text = ""
    inference_port: OptionalPort = 0
    poc_segment: Text = ""
    poc_port: OptionalPort = 0
    models: dict[ModelName, ModelConfig] = Field(default_factory=dict, max_length=MAX_MODELS)
    max_concurrent: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    hardware: list[Hardware] = Field(default_factory=list, max_length=MAX_HARDWARE)
    version: Text = ""
    is_enabled: StrictBool = True
    base_url: UrlText = Field(default="", description="the node's base URL (base_url mode)")
    auth_token: SecretStr | None = Field(
        default=None,
        max_length=MAX_TOKEN_LENGTH,
        description="bearer token for base_url mode; a secret",
    )
    url: UrlText = Field(default="", description="the 2024 era's single node URL")

    _urls = field_validator("base_url", "url")(_check_url)

    @field_validator("auth_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: Any) -> Any:
        return None if value == "" else value  # the Go writer's "" means no token

    @field_validator("host", mode="wrap")
    @classmethod
    def _host_as_the_predecessor_took_it(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        try:
            host = handler(value)
        except PydanticValidationError:
            # Its Go decoder took any string, spaces included: a legacy file never stops an
            # upgrade over one (it is noted; a new write of that node would be refused).
            if (
                from_predecessor(info)
                and isinstance(value, str)
                and len(value) <= 253
                and _PRINTABLE_RE.fullmatch(value)
            ):
                note_kept(info, f"host {value!r} is not a DNS name or an IP address")
                return value
            raise
        if not _HOST_RE.fullmatch(host):
            note_kept(info, f"host {host!r} is not a DNS name or an IP address")
        return host

    @model_validator(mode="wrap")
    @classmethod
    def _reachable(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        node = handler(data)
        if node.base_url or node.url:
            return node
        if from_predecessor(info):
            # Go read a missing port as 0 and started anyway (the repository's own config.yaml
            # has a node without poc_port): kept, noted.
            for name in ("host", "inference_port", "poc_port"):
                if not getattr(node, name):
                    note_kept(info, f"no {name} (the predecessor read it as empty)")
            return node
        missing = [
            InitErrorDetails(type=_ADDRESS_REQUIRED, loc=(name,), input=getattr(node, name))
            for name in ("host", "inference_port", "poc_port")
            if not getattr(node, name)
        ]
        if missing:
            raise PydanticValidationError.from_exception_data(cls.__name__, missing)
        return node

    @field_serializer("auth_token", when_used="always")
    def _token(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal_secrets") else REDACTED

    @field_validator("models", mode="before")
    @classmethod
    def _models_list_of_maps(cls, value: Any) -> Any:
        """Accept ``[{name: {...}}, ...]`` (hand-edited files) and ``[name, ...]`` (most of the
        predecessor's eras) as well as ``{name: {...}}``."""
        if value is None:
            return {}
        if isinstance(value, list):
            if len(value) > MAX_MODELS:
                raise ValueError(f"at most {MAX_MODELS} models per node, got {len(value)}")
            merged: dict[Any, Any] = {}
            for item in value:
                if isinstance(item, str):
                    item = {item: {}}  # noqa: PLW2901 - one shape for both forms below
                if not isinstance(item, dict):
                    raise ValueError("each item of a models list must be a name or a one-key map")
                for name, cfg in item.items():
                    if name in merged:
                        raise ValueError(f"model {name!r} is listed twice")
                    merged[name] = cfg
            return merged
        return value

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware_none(cls, value: Any) -> Any:
        return [] if value is None else value


# --- security keys (§11) ------------------------------------------------------------------


class SecurityKeyInfo(_Model):
    """What reads show of a node's security key: never the key, only a fingerprint."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    key_version: int = Field(description="1 at creation, +1 at every rotation")
    created_at: str = Field(description="when the node's first key was created (UTC, ISO 8601)")
    updated_at: str = Field(description="when the current key was issued (UTC, ISO 8601)")
    fingerprint: str = Field(description="sha256:<16 hex>, a non-reversible identifier")


class IssuedSecurityKey(SecurityKeyInfo):
    """A newly created or rotated key: the only time the full key is returned."""

    security_key: str = Field(
        repr=False, description="the full key; shown only at creation and rotation"
    )


#: The rule of :meth:`InferenceNodeConfig._reachable`, as JSON schema: a base URL, a 2024
#: URL, or a host with both ports.
_REACHABLE_SCHEMA: list[JsonValue] = [
    {"required": ["base_url"], "properties": {"base_url": {"minLength": 1}}},
    {"required": ["url"], "properties": {"url": {"minLength": 1}}},
    {
        "required": ["host", "inference_port", "poc_port"],
        "properties": {
            "host": {"minLength": 1},
            "inference_port": {"minimum": 1},
            "poc_port": {"minimum": 1},
        },
    },
]


class NodeInput(InferenceNodeConfig):
    """A node as a client sends it (HTTP body, ``dapi-config nodes add``): a field the
    registry does not know is an error naming it, so a typo such as ``is_enabeld`` is never
    stored silently. Validate it strictly (``strict=True``): no string-to-number or
    bool-to-number coercion, as the published schema says. Fields that a predecessor's files
    brought in are kept on stored nodes and shown by reads."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        json_schema_extra={"anyOf": _REACHABLE_SCHEMA},
    )


def is_valid_node_id(node_id: str) -> bool:
    """True when ``node_id`` is acceptable as a registry key (and as a URL path segment)."""
    return bool(_NODE_ID_RE.match(node_id))


__all__ = [
    "PARAMS_MODELS",
    "REDACTED",
    "REVEAL_SECRETS",
    "STATIC_SECTIONS",
    "ApiConfig",
    "BandwidthParamsCache",
    "ChainNodeConfig",
    "Hardware",
    "InferenceNodeConfig",
    "IssuedSecurityKey",
    "MLNodeKeyConfig",
    "ModelConfig",
    "ModelOverride",
    "NatsServerConfig",
    "NodeVersion",
    "PoCModelParams",
    "PoCParamsCache",
    "SecurityKeyInfo",
    "SeedInfo",
    "StaticConfig",
    "UpgradePlan",
    "ValidationParamsCache",
    "is_valid_node_id",
]
