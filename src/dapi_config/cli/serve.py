"""``dapi-config serve``: options, then :func:`dapi_config.service.run_service`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from dapi_config.cli._common import app, open_manager, setup_logging


@app.command()
def serve(  # noqa: PLR0917 - Typer passes each option by position
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="PEM certificate (chain): serve HTTPS only [default: api.tls_cert].",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            help="PEM key of the certificate [default: api.tls_key].",
            show_default=False,
        ),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-client-ca",
            help="PEM CA: require client certificates it signed [default: api.tls_client_ca].",
            show_default=False,
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen beyond loopback with no token and no client certificates: anyone who "
            "reaches the port can change the node registry, keys and backups.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes serving the port, sharing the state (at most 64). Raise it when "
            "one process's CPU is the limit (see the README, Workers).",
        ),
    ] = 1,
) -> None:
    """Run the admin HTTP API (docs at /docs) until SIGTERM or SIGINT.

    Also writes api-config-full.yaml beside the config every CONFIG_EXPORT_INTERVAL (default
    10m; 0 disables), and a verified backup into <state dir>/backups every API_BACKUP_INTERVAL
    (default 1h), keeping API_BACKUP_KEEP of them (default 24). One log line per request and
    per state change on stderr.

    Beyond loopback it needs a token (tokens create, or api.admin_token) or client
    certificates, and should have TLS.

    Example: dapi-config serve --config config.yaml --port 9200
    """
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        setup_logging(logging.INFO)  # a service logs its requests and state changes
    from dapi_config.service import ServiceOptions, run_service  # noqa: PLC0415 - FastAPI

    options = ServiceOptions(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        allow_unauthenticated=allow_unauthenticated,
    )
    if workers == 1:
        with open_manager(actor="api") as cm:
            run_service(cm, options)
        return
    from dapi_config.supervisor import run_workers  # noqa: PLC0415

    run_workers(lambda: open_manager(actor="api"), options, workers)
