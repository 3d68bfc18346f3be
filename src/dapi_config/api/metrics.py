"""Prometheus metrics of the service and the ``/metrics`` route.

Each app has its own :class:`ServiceMetrics` (own registry), so several apps in one process
(tests) never share counters. ``GET /metrics`` is a plain route (no redirect).

Under ``serve --workers N`` each worker counts in files of a directory the workers share
(prometheus-client's multiprocess mode), and a scrape of any worker reports the whole service:
counters and histograms summed over the workers, each gauge as its ``multiprocess_mode`` says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client import (
    GCCollector as _GCCollector,
)
from prometheus_client import (
    PlatformCollector as _PlatformCollector,
)
from prometheus_client import (
    ProcessCollector as _ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from dapi_config.errors import DapiConfigError
from dapi_config.health import IntegrityResult, Readiness
from dapi_config.manager import ConfigManager
from dapi_config.settings import point_metrics_at

# Every counter and histogram would also export a ``*_created`` series (its creation time):
# noise on every dashboard and scrape. The switch is process-wide; only the service imports it.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's metrics, in their own registry.

    Other parts of the service set the gauges: the exporter sets
    :attr:`last_export_timestamp`, the backup scheduler :attr:`last_backup_timestamp`.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, shared_dir: Path | None = None
    ) -> None:
        """``shared_dir``: count in the files of this directory, shared by the service's
        workers (see :func:`count_in_shared_files`); a scrape then reports every worker."""
        self.registry = registry or CollectorRegistry()
        self.shared_dir = shared_dir
        self._state_gauges: StateGauges | None = None
        r = self.registry
        if shared_dir is None:
            # A process's own figures: under workers they would describe one worker only.
            _ProcessCollector(registry=r)
            _PlatformCollector(registry=r)
            _GCCollector(registry=r)
        self.requests = Counter(
            "dapi_config_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "dapi_config_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "dapi_config_http_errors",
            "HTTP error responses (status >= 400) by status.",
            ["status"],
            registry=r,
        )
        self.state_writes = Counter(
            "dapi_config_state_writes",
            "State write transactions of this process by outcome (committed, failed).",
            ["outcome"],
            registry=r,
        )
        self.state_write_seconds = Histogram(
            "dapi_config_state_write_duration_seconds",
            "State write transaction latency (lock wait + work + commit).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.last_export_timestamp = Gauge(
            "dapi_config_last_export_timestamp_seconds",
            "Unix time of the last successful full-config export (0 = none yet).",
            multiprocess_mode="max",
            registry=r,
        )
        self.last_backup_timestamp = Gauge(
            "dapi_config_last_backup_timestamp_seconds",
            "Unix time of the last successful backup (0 = none yet).",
            multiprocess_mode="max",
            registry=r,
        )
        self.auth_failures = Counter(
            "dapi_config_auth_failures",
            "Admin API requests refused for a missing or wrong token (401), by reason.",
            ["reason"],
            registry=r,
        )
        self.auth_slowed = Counter(
            "dapi_config_auth_slowed",
            "401 answers delayed because their client kept failing (see the README).",
            registry=r,
        )
        self.integrity_ok = Gauge(
            "dapi_config_integrity_check_ok",
            "1 when the last periodic integrity check found the state sound, 0 when it found "
            "damage (absent until a check finished).",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.integrity_timestamp = Gauge(
            "dapi_config_integrity_check_timestamp_seconds",
            "Unix time of the last periodic integrity check that finished (0 = none yet).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.trail_ok = Gauge(
            "dapi_config_trail_check_ok",
            "1 when the last periodic check found the audit trail's chain whole and the state "
            "as the trail says, 0 when it found a break or a difference (absent until a check "
            "finished; API_DEEP_CHECK_INTERVAL).",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.trail_timestamp = Gauge(
            "dapi_config_trail_check_timestamp_seconds",
            "Unix time of the last periodic check of the audit trail that finished (0 = none).",
            multiprocess_mode="livemax",
            registry=r,
        )

    def observe_trail(self, result: IntegrityResult) -> None:
        """Record a periodic check of the audit trail (an inconclusive one changes nothing)."""
        if result.ok is not None:
            self.trail_ok.set(1 if result.ok else 0)
            self.trail_timestamp.set(result.checked_at)

    def watch_state(self, manager: ConfigManager, readiness: Readiness) -> None:
        """Export the domain gauges of :class:`StateGauges` for ``manager`` (once per app)."""
        self._state_gauges = StateGauges(manager, readiness)
        self.registry.register(self._state_gauges)

    def observe_integrity(self, result: IntegrityResult) -> None:
        """Record a periodic integrity check (an inconclusive one changes nothing)."""
        if result.ok is not None:
            self.integrity_ok.set(1 if result.ok else 0)
            self.integrity_timestamp.set(result.checked_at)

    def observe_write(self, seconds: float, committed: bool) -> None:
        """Record one state write transaction (a :class:`Database` transaction observer)."""
        self.state_writes.labels("committed" if committed else "failed").inc()
        self.state_write_seconds.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker)."""
        if self.shared_dir is None:
            return bytes(generate_latest(self.registry))
        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape, path=str(self.shared_dir))  # type: ignore[no-untyped-call]
        if self._state_gauges is not None:
            # Read from the shared state: the same in every worker.
            scrape.register(self._state_gauges)
        return bytes(generate_latest(scrape))


def count_in_shared_files(directory: Path) -> None:
    """Make this process's metrics count in ``directory`` (prometheus-client's multiprocess
    mode), for a worker of ``serve --workers N``: call it in the worker before any metric is
    made. The client picks its value class when first imported, from its variable
    ``PROMETHEUS_MULTIPROC_DIR``; a forked worker has imported it already, so both are set
    here."""
    point_metrics_at(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def forget_worker(directory: Path, pid: int) -> None:
    """Drop the live gauges of a worker that ended (its counters stay in the sums)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class StateGauges:
    """What an operator graphs and alerts on, read from the state at each scrape (the same
    view for every replica of a shared state): readiness, the chain height, the current node
    version (an info metric), the nodes registered and enabled, the audit revision, the
    schedule's length and the age of the newest backup. A value the state cannot give right
    now is left out of that scrape (``dapi_config_ready`` 0 says why), never reported as 0."""

    def __init__(self, manager: ConfigManager, readiness: Readiness) -> None:
        self.manager = manager
        self.readiness = readiness

    def collect(self) -> Iterator[Metric]:
        report = self.readiness.report_within()
        yield GaugeMetricFamily(
            "dapi_config_ready",
            "1 when the state can be read and written (what /readyz says), else 0.",
            value=1.0 if report.ready else 0.0,
        )
        try:
            summary = self.manager.state_summary()
            enabled = self.manager.get_node_count(enabled_only=True)
        except DapiConfigError:
            summary = None
        if summary is not None:
            yield from _state_families(summary, enabled)
        if self.manager.supports_backups:
            try:
                newest = self.manager.list_backups(verify=False)
            except DapiConfigError:
                newest = []
            if newest:
                yield GaugeMetricFamily(
                    "dapi_config_last_backup_age_seconds",
                    "Seconds since the newest backup in the backup directory was taken "
                    "(absent while there is none).",
                    value=max(0.0, time.time() - newest[0].created_at.timestamp()),
                )


def _state_families(summary: dict[str, Any], enabled: int) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dapi_config_chain_height",
        "The chain height the node last recorded.",
        value=float(summary["height"]),
    )
    version = InfoMetricFamily(
        "dapi_config_node_version", "The current node version (label version)."
    )
    version.add_metric([], {"version": str(summary["current_node_version"])})
    yield version
    yield GaugeMetricFamily(
        "dapi_config_nodes", "Inference nodes registered.", value=float(summary["node_count"])
    )
    yield GaugeMetricFamily(
        "dapi_config_nodes_enabled",
        "Inference nodes whose admin state is enabled.",
        value=float(enabled),
    )
    yield GaugeMetricFamily(
        "dapi_config_audit_revision",
        "The newest audit revision (grows with every change).",
        value=float(summary["revision"]),
    )
    yield GaugeMetricFamily(
        "dapi_config_node_version_schedule_length",
        "Node versions scheduled and not yet reached.",
        value=float(len(summary["node_versions"])),
    )


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: requests, latencies, state writes, errors, export/backup."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)
