"""``dapi-config serve``: options, then :func:`dapi_config.service.run_service`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from dapi_config.cli._common import app, open_manager, setup_logging
from dapi_config.service import ServiceOptions, run_service


@app.command()
def serve(
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

    Example: dapi-config serve --config config.yaml --port 9200
    """
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        setup_logging(logging.INFO)  # a service logs its requests and state changes
    with open_manager(actor="api") as cm:
        run_service(cm, ServiceOptions(host=host, port=port))
