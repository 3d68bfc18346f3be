"""The running service: the admin HTTP API plus its background work, until a signal stops it.

:func:`run_service` puts together what ``dapi-config serve`` runs on an open manager: the
master-key check, the listening socket (bound first, so a busy port is one clear error), the
FastAPI app and its metrics, the scheduled backups, the periodic export (and, through the
manager, the ``dual`` mirror), and a graceful stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from dapi_config.errors import ListenError
from dapi_config.manager import ConfigManager
from dapi_config.store.backup import BackupInfo, BackupScheduler

log = logging.getLogger("dapi_config.serve")


@dataclass(frozen=True)
class ServiceOptions:
    """Where to listen: ``port`` None means ``api.admin_server_port`` of the config."""

    host: str = "127.0.0.1"
    port: int | None = None


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
    if not cm.backend.supports_backups:
        log.warning("%s: no scheduled backups of this state (see the README)", cm.state_location)
        return None
    keep = cm.settings.backup_keep
    scheduler = BackupScheduler(
        lambda: cm.backend.scheduled_backup(keep=keep),
        interval=cm.settings.backup_interval,
        on_backup=on_backup,
    )
    existing = cm.backend.list_backups(verify=False)
    if existing:
        on_backup(existing[0])
    scheduler.start()
    return scheduler


def run_service(cm: ConfigManager, options: ServiceOptions) -> int | None:
    """Serve the admin API on ``cm`` until SIGTERM/SIGINT; returns the stopping signal.

    In-flight requests finish before it returns; the caller then closes the manager.
    Raises :class:`MasterKeyError` (wrong master key, checked before serving),
    :class:`ListenError` (the port cannot be bound or the server cannot start).
    """
    import uvicorn  # noqa: PLC0415 - only the service needs the server

    from dapi_config.api import ServiceMetrics, create_app  # noqa: PLC0415

    # Fail at start-up, not at the first key rotation, when the master key is wrong.
    log.info("secrets at rest: master key from %s", cm.check_master_key())
    api = cm.get_api_config()
    port = options.port or api.admin_server_port
    token = api.admin_token
    if (token is None or not token.get_secret_value()) and not is_loopback(options.host):
        log.warning(
            "the admin API on %s has no admin token: anyone who can reach the port can "
            "change the node registry; set api.admin_token or DAPI_API__ADMIN_TOKEN",
            options.host,
        )
    listener = listen(options.host, port)
    metrics = ServiceMetrics()
    scheduler: BackupScheduler | None = None
    stop_signals: list[int] = []
    previous: dict[int, object] = {}
    try:
        application = create_app(cm, service_metrics=metrics)
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
            )
        )
        log.info(
            "serving the admin API on http://%s:%d (state %s)",
            options.host,
            port,
            cm.state_location,
        )
        previous = {
            sig: signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        # uvicorn handles SIGTERM/SIGINT: stop accepting, finish in-flight requests, return.
        # It then re-raises the signal to the handlers it found, which are ours above: so the
        # state file is closed properly and a requested stop exits 0.
        server.run(sockets=[listener])
    except SystemExit as exc:  # uvicorn exits on start-up failures (logged above)
        raise ListenError(f"the admin API could not start on {options.host}:{port}") from exc
    finally:
        listener.close()
        if scheduler is not None:
            scheduler.stop()
        cm.stop_periodic_export()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    stopped_by = stop_signals[0] if stop_signals else None
    log.info("stopped%s", f" by signal {stopped_by}" if stopped_by else "")
    return stopped_by
