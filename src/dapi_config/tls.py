"""TLS for the admin API (SPEC §11, Transport): the server's context and the remote client's.

Both take TLS 1.2 or newer only, with the cipher suites of Python's ``ssl`` defaults (which
follow the system's OpenSSL policy). With a client CA the server requires a client certificate
that CA signed (mutual TLS): a client without one, or with another CA's, fails the handshake.
"""

from __future__ import annotations

import os
import ssl

from dapi_config.errors import ConfigError


def _problem(what: str, path: str | os.PathLike[str], exc: BaseException) -> ConfigError:
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
    return ConfigError(f"{what}: cannot use {path}: {reason}")


def server_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    client_ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """The server side: ``cert`` (PEM, the chain after the leaf) and its ``key`` (PEM; None
    when ``cert`` holds it too); ``client_ca``: require client certificates it signed.
    Raises :class:`ConfigError` naming the file that cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), None if key is None else str(key))
    except (OSError, ssl.SSLError) as exc:
        files = str(cert) if key is None else f"{cert} with the key {key}"
        raise _problem("TLS certificate", files, exc) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise _problem("TLS client CA", client_ca, exc) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """The client side: the server's certificate checked against ``ca`` (PEM; None: the
    system's trust store) and its host name; ``cert``/``key``: the client certificate
    presented to a server that requires one. Raises :class:`ConfigError`."""
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise _problem("TLS CA", ca or "the system trust store", exc) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), None if key is None else str(key))
        except (OSError, ssl.SSLError) as exc:
            raise _problem("TLS client certificate", cert, exc) from None
    return context


__all__ = ["client_context", "server_context"]
