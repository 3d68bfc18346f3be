"""``dapi-config serve``: the admin HTTP API with the periodic export."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from typing import Annotated

import typer

from dapi_config.cli._common import (
    ConfigOpt,
    StateOpt,
    app,
    fail,
    open_manager,
    setup_logging,
)
from dapi_config.errors import DapiConfigError
from dapi_config.export import ExportSettings
from dapi_config.store.backup import BackupScheduler, list_backups

log = logging.getLogger("dapi_config.serve")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
def serve(
    config: ConfigOpt = None,
    state: StateOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (use 0.0.0.0 for all).")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port [default: api.admin_server_port of the config, 9200].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the admin HTTP API (docs at /docs) until SIGTERM or SIGINT.

    Also writes api-config-full.yaml beside the config every CONFIG_EXPORT_INTERVAL (default
    10m; 0 disables), and a verified backup into <state dir>/backups every API_BACKUP_INTERVAL
    (default 1h), keeping API_BACKUP_KEEP of them (default 24). One log line per request and
    per state change on stderr.

    Example: dapi-config --config config.yaml serve --port 9200
    """
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from dapi_config.api import ServiceMetrics, create_app  # noqa: PLC0415

    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        setup_logging(logging.INFO)  # a service logs its requests and state changes
    try:
        settings = ExportSettings.from_env()
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    with open_manager(config, state, actor="api") as cm:
        # Fail at start-up, not at the first key rotation, when the master key is wrong.
        key_source = cm.check_master_key()
        log.info("secrets at rest: master key from %s", key_source)
        listen_port = port or cm.get_api_config().admin_server_port
        token = cm.get_api_config().admin_token
        if (token is None or not token.get_secret_value()) and not _is_loopback(host):
            log.warning(
                "the admin API on %s has no admin token: anyone who can reach the port can "
                "change the node registry; set api.admin_token or DAPI_API__ADMIN_TOKEN",
                host,
            )
        # Bind before starting anything else: a busy port is one clear error line, exit 1.
        listener = _listen(host, listen_port)
        service_metrics = ServiceMetrics()
        application = create_app(cm, service_metrics=service_metrics)
        scheduler: BackupScheduler | None = None
        if cm.state_mode == "yaml":
            log.warning("API_STATE_MODE=yaml: no state database, so no scheduled backups")
        else:
            try:
                scheduler = BackupScheduler.from_env(
                    cm.state_path,
                    on_backup=lambda info: service_metrics.last_backup_timestamp.set(
                        info.created_at.timestamp()
                    ),
                )
            except DapiConfigError as exc:
                raise fail(str(exc)) from None
            existing = list_backups(scheduler.backup_dir, cm.state_path, verify=False)
            if existing:
                service_metrics.last_backup_timestamp.set(existing[0].created_at.timestamp())
            scheduler.start()
        if settings.interval > 0:
            cm.start_periodic_export(
                settings.interval,
                keep=settings.keep,
                include_secrets=settings.include_secrets,
                on_export=service_metrics.last_export_timestamp.set,
            )
        server_config = uvicorn.Config(
            application,
            host=host,
            port=listen_port,
            log_config=None,  # keep our stderr handler; requests are logged by the app
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        server = uvicorn.Server(server_config)
        log.info(
            "serving the admin API on http://%s:%d (state %s)", host, listen_port, cm.state_path
        )
        stop_signals: list[int] = []
        previous = {
            sig: signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            # uvicorn handles SIGTERM/SIGINT: stop accepting, finish in-flight requests, return.
            # It then re-raises the signal to the handlers it found, which are ours above: so
            # the state file is closed properly and a requested stop exits 0.
            server.run(sockets=[listener])
        except SystemExit as exc:  # uvicorn exits on start-up failures (logged above)
            raise fail(f"the admin API could not start on {host}:{listen_port}") from exc
        finally:
            listener.close()
            if scheduler is not None:
                scheduler.stop()
            cm.stop_periodic_export()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    log.info("stopped%s", f" by signal {stop_signals[0]}" if stop_signals else "")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or exit 1 with a clear message."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        # getaddrinfo's proto (IPPROTO_TCP) matters: asyncio sets TCP_NODELAY only on such
        # sockets; without it each response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
