"""Every limit the admin API enforces, in one place, and their description in the OpenAPI
document (SPEC §9: limits are checked before per-element work and published)."""

from __future__ import annotations

from dapi_config.models import (
    MAX_ARG_LENGTH,
    MAX_HARDWARE,
    MAX_MODEL_ARGS,
    MAX_MODELS,
    MAX_NAME_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_URL_LENGTH,
)

#: Largest request body accepted (413 beyond): a full 1,000-node batch fits with room to spare.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Most nodes one ``POST /nodes/batch`` accepts (422 ``batch_too_large`` beyond).
MAX_BATCH = 1000
#: Most problems one 422 reply lists (the message says how many were left out).
MAX_ERRORS = 20
#: Seconds a client has to send a request's headers once it connected (or, on a kept-alive
#: connection, once it started the next request); then the connection is closed.
HEADER_TIMEOUT_S = 10.0
#: Most bytes of a request line and headers (431 and the connection closed beyond): the
#: bound h11 kept before, which httptools' parser does not keep by itself.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds a client has to send a request's whole body once its headers are in (408 and the
#: connection closed beyond): a body trickled a byte at a time cannot hold a connection.
BODY_TIMEOUT_S = 30.0
#: Seconds an idle kept-alive connection stays open.
KEEP_ALIVE_TIMEOUT_S = 5
#: Most connections served at once; lower when the open-file limit is lower (see ``serve``).
MAX_CONNECTIONS = 4096


def describe_limits() -> str:
    """The limits as a Markdown list, for the OpenAPI description."""
    return "\n".join(
        [
            "Limits:",
            f"- request body: {MAX_BODY_BYTES // (1024 * 1024)} MiB (413 beyond);",
            f"- `POST /admin/v1/nodes/batch`: {MAX_BATCH} nodes (422 `batch_too_large` "
            "beyond, before any node is validated);",
            f"- a 422 reply lists at most {MAX_ERRORS} problems and says how many were left out;",
            f"- per node: {MAX_MODELS} models of up to {MAX_MODEL_ARGS} arguments of "
            f"{MAX_ARG_LENGTH} characters, {MAX_HARDWARE} hardware items, names, versions and "
            f"segments of {MAX_NAME_LENGTH} characters, URLs of {MAX_URL_LENGTH}, tokens of "
            f"{MAX_TOKEN_LENGTH}; no control characters; `host` holds no spaces (a DNS name or "
            "an IP address; other text, as the predecessor's API took it, is stored and "
            "logged);",
            "- types are strict: no string-to-number or bool-to-number coercion;",
            f"- request line and headers: {MAX_HEADER_BYTES // 1024} KiB (431 beyond);",
            f"- request headers must arrive within {HEADER_TIMEOUT_S:.0f} s and the body within "
            f"{BODY_TIMEOUT_S:.0f} s after them (408 `body_timeout`); an idle "
            f"kept-alive connection is closed after {KEEP_ALIVE_TIMEOUT_S} s;",
            f"- at most {MAX_CONNECTIONS} connections (fewer under a lower open-file limit); "
            "one beyond is closed at once.",
        ]
    )
