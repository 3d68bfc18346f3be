"""The admin HTTP API (§9): ``create_app(manager)`` builds the FastAPI app.

One module per area (``nodes``, ``state``, ``health``, ``metrics``), each with its own
``router``; :mod:`.errors` holds the one error-to-status table.
"""

from dapi_config.api._app import ADMIN_PREFIX, create_app
from dapi_config.api.errors import ERROR_STATUS
from dapi_config.api.metrics import ServiceMetrics, count_in_shared_files, forget_worker

__all__ = [
    "ADMIN_PREFIX",
    "ERROR_STATUS",
    "ServiceMetrics",
    "count_in_shared_files",
    "create_app",
    "forget_worker",
]
