"""The running service: the admin HTTP API plus its background work, until a signal stops it.

:func:`run_service` puts together what ``dapi-config serve`` runs on an open manager: the
master-key check, the listening socket (bound first, so a busy port is one clear error), the
FastAPI app and its metrics, the scheduled backups, the periodic export (and, through the
manager, the ``dual`` mirror), and a graceful stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dapi_config.access import no_token_warning
from dapi_config.errors import ConfigError, ListenError
from dapi_config.health import IntegrityChecker, Readiness, TrailChecker
from dapi_config.manager import ConfigManager
from dapi_config.static import config_file_path
from dapi_config.store.backend import IntegrityCheckable
from dapi_config.store.backup import SCHEDULED, BackupInfo, BackupScheduler
from dapi_config.tls import server_context

if TYPE_CHECKING:
    from dapi_config.api import ServiceMetrics

log = logging.getLogger("dapi_config.serve")

#: Files kept free for the state, its backups and the log when connections are capped.
RESERVED_FILES = 128
#: Seconds between two log lines about failing accepts (out of file descriptors).
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to the hard one; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return soft


def connection_cap(open_files: int) -> int:
    """How many connections to serve at once under an open-file limit of ``open_files``."""
    from dapi_config.api.limits import MAX_CONNECTIONS  # noqa: PLC0415 - see run_service

    return max(16, min(MAX_CONNECTIONS, open_files - RESERVED_FILES))


class _AcceptErrorFilter(logging.Filter):
    """Lets one "socket.accept() out of system resource" record through per interval (with
    how many were held back), instead of one traceback per refused connection."""

    def __init__(self, interval: float = ACCEPT_ERROR_LOG_INTERVAL_S) -> None:
        super().__init__()
        self._throttle = _Throttle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        held_back = self._throttle.allow()
        if held_back is None:
            return False
        record.msg = (
            "cannot accept connections: out of file descriptors (open-file limit reached); "
            f"{held_back} more such errors in the last {self._throttle.interval:.0f} s"
        )
        record.args = None
        record.exc_info = None
        return True


def _bounded_protocol(cap: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the bounds uvicorn lacks: at most ``cap``
    connections (one beyond is closed as soon as it is accepted, so connections never use up
    the open-file limit, where accepting fails and the service stops answering),
    :data:`HEADER_TIMEOUT_S` to send a request's headers (a client trickling one byte at a
    time would otherwise hold its connection for ever) and :data:`MAX_HEADER_BYTES` of them
    (llhttp takes headers of any size)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

    from dapi_config.api.limits import HEADER_TIMEOUT_S, MAX_HEADER_BYTES  # noqa: PLC0415

    refused = _Throttle(ACCEPT_ERROR_LOG_INTERVAL_S)
    body = (
        b'{"error": "request line and headers larger than %d bytes", "code": "headers_too_large"}'
        % MAX_HEADER_BYTES
    )
    too_large = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )

    class BoundedHttpTools(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        #: Bytes of the current request's line and headers so far; None between requests.
        _header_bytes: int | None = 0

        def connection_made(self, transport: Any) -> None:
            if len(self.connections) >= cap:
                held_back = refused.allow()
                if held_back is not None:
                    log.warning(
                        "connection cap reached (%d open): closing new connections "
                        "(%d more closed in the last %.0f s)",
                        cap,
                        held_back,
                        refused.interval,
                    )
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.transport is None or self.transport.is_closing():
                return  # refused at the cap, or closed for its headers
            if self._header_bytes is not None:
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self._headers_in(data):
                    self.transport.write(too_large)
                    self.transport.close()
                    return
            super().data_received(data)

        def _headers_in(self, data: bytes) -> bool:
            # The bytes over the bound may be a body sent with the headers' last packet.
            return b"\r\n\r\n" in data and (
                self._header_bytes is not None
                and self._header_bytes - len(data) + data.index(b"\r\n\r\n") <= MAX_HEADER_BYTES
            )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # Counted from the next packet: at most one read's worth goes uncounted.
            self._header_bytes = 0
            if self._header_timer is None:
                self._arm()  # the next request on a kept-alive connection has begun

        def on_headers_complete(self) -> None:
            self._disarm()  # its headers are in
            self._header_bytes = None
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.transport is None:
                return  # refused at the cap: never counted
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing() and self._header_bytes is not None:
                self.transport.close()

    return BoundedHttpTools


class _Throttle:
    """Lets one event through per ``interval`` seconds and counts the ones held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._held_back = 0

    def allow(self) -> int | None:
        """None to hold this one back; else how many were held back since the last one."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held_back += 1
            return None
        held_back, self._last, self._held_back = self._held_back, now, 0
        return held_back


@dataclass(frozen=True)
class ServiceOptions:
    """Where and how to listen: ``port`` None means ``api.admin_server_port`` of the config;
    the TLS files (None: ``api.tls_*`` of the config, if set) make it HTTPS only;
    ``allow_unauthenticated`` lets it listen beyond loopback with no token and no client
    certificates (anyone who reaches the port may change everything)."""

    host: str = "127.0.0.1"
    port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    allow_unauthenticated: bool = False


@dataclass(frozen=True)
class Transport:
    """What :func:`run_service` serves: TLS (None: plain HTTP) and how clients authenticate."""

    tls: ssl.SSLContext | None
    client_certificates: bool

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def transport(cm: ConfigManager, options: ServiceOptions) -> Transport:
    """The TLS context of ``options`` (else of the config's ``api.tls_*``, relative to the
    config file), loaded now: a missing or bad file is a :class:`ConfigError` at start-up."""
    api = cm.get_api_config()

    def pick(option: Path | None, configured: str | None) -> Path | None:
        if option is not None:
            return option
        return None if not configured else config_file_path(configured, cm.config_path.parent)

    cert = pick(options.tls_cert, api.tls_cert)
    key = pick(options.tls_key, api.tls_key)
    client_ca = pick(options.tls_client_ca, api.tls_client_ca)
    if cert is None:
        if key is not None or client_ca is not None:
            raise ConfigError(
                "a TLS key or client CA is set without a certificate: give --tls-cert "
                "(api.tls_cert) too"
            )
        return Transport(None, client_certificates=False)
    return Transport(
        server_context(cert, key, client_ca), client_certificates=client_ca is not None
    )


def check_exposure(
    cm: ConfigManager, host: str, transport: Transport, *, allow_unauthenticated: bool
) -> bool:
    """Refuse (:class:`ConfigError`) to serve beyond loopback with nothing that authenticates
    clients (SPEC §11, Secure by default), unless ``allow_unauthenticated``. Returns whether
    the admin API must refuse every request while no token exists (beyond loopback, tokens
    being its only authentication)."""
    if is_loopback(host):
        return False
    if transport.tls is None:
        log.warning(
            "the admin API on %s serves plain HTTP: tokens and node auth tokens cross the "
            "network in clear; give --tls-cert and --tls-key (see the README, Security)",
            host,
        )
    if transport.client_certificates:
        return False
    if allow_unauthenticated:
        if cm.admin_token() is None and not cm.has_tokens():
            log.warning("%s", no_token_warning(host))
        return False
    if cm.admin_token() is None and not cm.has_tokens():
        raise ConfigError(
            f"refusing to serve the admin API on {host} without authentication: anyone who "
            "reaches the port could change the node registry. Create a token (dapi-config "
            "tokens create NAME --role admin) or set api.admin_token, or require client "
            "certificates (--tls-client-ca); --allow-unauthenticated serves it open anyway"
        )
    return True


def is_loopback(host: str) -> bool:
    """True for a loopback address (or ``localhost``): reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``. Raises :class:`ListenError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        # getaddrinfo's proto (IPPROTO_TCP) matters: asyncio sets TCP_NODELAY only on such
        # sockets; without it each response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _start_backups(
    cm: ConfigManager, on_backup: Callable[[BackupInfo], None]
) -> BackupScheduler | None:
    if not cm.supports_backups:
        log.warning("%s: no scheduled backups of this state (see the README)", cm.state_location)
        return None
    scheduler = BackupScheduler(
        lambda: cm.backup(reason=SCHEDULED),
        interval=cm.settings.backup_interval,
        on_backup=on_backup,
    )
    existing = cm.list_backups(verify=False)
    if existing:
        on_backup(existing[0])
    scheduler.start()
    return scheduler


def _start_integrity_checks(cm: ConfigManager, metrics: ServiceMetrics) -> IntegrityChecker | None:
    interval = cm.settings.integrity_interval
    if interval <= 0 or not isinstance(cm.backend, IntegrityCheckable):
        return None  # off, or a database server that checks its own storage
    checker = IntegrityChecker(cm.backend, interval=interval, on_result=metrics.observe_integrity)
    checker.start()
    return checker


def _start_trail_checks(cm: ConfigManager, metrics: ServiceMetrics) -> TrailChecker | None:
    if cm.settings.deep_check_interval <= 0 or cm.state_mode == "yaml":
        return None  # off, or no trail to check
    checker = TrailChecker(
        cm, interval=cm.settings.deep_check_interval, on_result=metrics.observe_trail
    )
    checker.start()
    return checker


@dataclass(frozen=True)
class Prepared:
    """What start-up decided and bound, before any worker serves: the listening socket (a
    busy port is one clear error, before anything runs), TLS, whether the API must refuse
    every request while no token exists, and the connection cap."""

    options: ServiceOptions
    port: int
    listener: socket.socket
    transport: Transport
    require_token: bool
    connection_cap: int


@dataclass(frozen=True)
class WorkerRole:
    """One worker of ``serve --workers N``: ``primary`` runs the service's scheduled work
    (backups, the periodic export) for all; ``metrics_dir`` is the directory whose files the
    workers count their metrics in."""

    index: int
    primary: bool
    metrics_dir: Path


def prepare_service(cm: ConfigManager, options: ServiceOptions) -> Prepared:
    """Check what must hold before serving and bind the port.

    Raises :class:`MasterKeyError` (wrong master key: at start-up, not at the first key
    rotation), :class:`ConfigError` (TLS files, serving beyond loopback unauthenticated),
    :class:`ListenError` (the port cannot be bound).
    """
    log.info("secrets at rest: master key from %s", cm.check_master_key())
    port = options.port or cm.get_api_config().admin_server_port
    served = transport(cm, options)
    require_token = check_exposure(
        cm, options.host, served, allow_unauthenticated=options.allow_unauthenticated
    )
    cap = connection_cap(raise_open_file_limit())
    return Prepared(options, port, listen(options.host, port), served, require_token, cap)


def log_serving(prepared: Prepared, state_location: object, workers: int = 1) -> None:
    """The one line that says where the admin API listens."""
    served = prepared.transport
    log.info(
        "serving the admin API on %s://%s:%d%s (state %s)%s",
        served.scheme,
        prepared.options.host,
        prepared.port,
        " (client certificates required)" if served.client_certificates else "",
        state_location,
        f" with {workers} workers" if workers > 1 else "",
    )


def run_service(cm: ConfigManager, options: ServiceOptions) -> int | None:
    """Serve the admin API on ``cm`` in this process until SIGTERM/SIGINT; returns the
    stopping signal (see :func:`prepare_service` for what it raises before serving)."""
    prepared = prepare_service(cm, options)
    try:
        return serve_prepared(cm, prepared)
    finally:
        prepared.listener.close()


def serve_prepared(
    cm: ConfigManager, prepared: Prepared, role: WorkerRole | None = None
) -> int | None:
    """Serve the admin API on ``cm`` and ``prepared.listener`` until SIGTERM/SIGINT; returns
    the stopping signal. ``role``: as one worker of several (None: the only process).

    In-flight requests finish before it returns; the caller then closes the manager and the
    listener. Raises :class:`ListenError` when the server cannot start.
    """
    import uvicorn  # noqa: PLC0415 - only the service needs the server

    from dapi_config.api import (  # noqa: PLC0415
        ServiceMetrics,
        count_in_shared_files,
        create_app,
    )
    from dapi_config.api.limits import KEEP_ALIVE_TIMEOUT_S  # noqa: PLC0415

    options, port, served = prepared.options, prepared.port, prepared.transport
    if role is not None:
        count_in_shared_files(role.metrics_dir)
    metrics = ServiceMetrics(shared_dir=None if role is None else role.metrics_dir)
    primary = role is None or role.primary
    scheduler: BackupScheduler | None = None
    integrity: IntegrityChecker | None = None
    trail: TrailChecker | None = None
    stop_signals: list[int] = []
    previous: dict[int, object] = {}
    accept_errors = _AcceptErrorFilter()
    logging.getLogger("asyncio").addFilter(accept_errors)
    try:
        readiness = Readiness(cm)
        # Every worker checks: its own readiness and its refusal of writes into a damaged
        # file rest on it (the checks only read).
        readiness.integrity = integrity = _start_integrity_checks(cm, metrics)
        readiness.trail = trail = _start_trail_checks(cm, metrics)
        application = create_app(
            cm, service_metrics=metrics, readiness=readiness, require_token=prepared.require_token
        )
        if primary:
            scheduler = _start_backups(
                cm, lambda info: metrics.last_backup_timestamp.set(info.created_at.timestamp())
            )
            if cm.settings.export_interval > 0:
                cm.start_periodic_export(on_export=metrics.last_export_timestamp.set)
        server = uvicorn.Server(
            uvicorn.Config(
                application,
                host=options.host,
                port=port,
                log_config=None,  # keep our stderr handler; requests are logged by the app
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=30,
                http=_bounded_protocol(prepared.connection_cap),
                # Chosen by measurement (benchmarks/servers.py, benchmarks/peers.py): llhttp
                # and libuv cost a fraction of h11 and asyncio's loop per request.
                loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
            )
        )
        server.config.load()
        server.config.ssl = served.tls  # ours (TLS 1.2+, client certificates): see .tls
        if role is None:  # workers: their supervisor said it once, before any answered
            log_serving(prepared, cm.state_location)
        previous = {
            sig: signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        # uvicorn handles SIGTERM/SIGINT: stop accepting, finish in-flight requests, return.
        # It then re-raises the signal to the handlers it found, which are ours above: so the
        # state file is closed properly and a requested stop exits 0.
        server.run(sockets=[prepared.listener])
    except SystemExit as exc:  # uvicorn exits on start-up failures (logged above)
        raise ListenError(f"the admin API could not start on {options.host}:{port}") from exc
    finally:
        if scheduler is not None:
            scheduler.stop()
        if integrity is not None:
            integrity.stop()
        if trail is not None:
            trail.stop()
        cm.stop_periodic_export()
        logging.getLogger("asyncio").removeFilter(accept_errors)
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    stopped_by = stop_signals[0] if stop_signals else None
    if role is None:
        log.info("stopped%s", f" by signal {stopped_by}" if stopped_by else "")
    return stopped_by
