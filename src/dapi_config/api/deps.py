"""Dependencies shared by the routers: the app's manager, metrics and readiness checks.

They are ``async def`` because they only read ``app.state``: FastAPI runs a plain ``def``
dependency in the thread pool, a hand-off that cost more than the rest of a probe.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dapi_config.api.metrics import ServiceMetrics
from dapi_config.health import Readiness
from dapi_config.manager import ConfigManager


async def get_manager(request: Request) -> ConfigManager:
    """The :class:`ConfigManager` the app was built around."""
    manager: ConfigManager = request.app.state.manager
    return manager


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's :class:`ServiceMetrics` (set gauges such as the last backup time)."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_readiness(request: Request) -> Readiness:
    """The app's readiness checks (add one with ``Readiness.add_check``)."""
    readiness: Readiness = request.app.state.readiness
    return readiness


Manager = Annotated[ConfigManager, Depends(get_manager)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
