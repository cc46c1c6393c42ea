"""``/metrics``: Prometheus text, read from the target databases at scrape time.

A custom collector (as django-rq's ``metrics_collector.py`` does) asks the service
layer for each target's status on every scrape, so every gunicorn worker reports
the same truth and nothing is kept in process memory. Each scrape builds its own
``CollectorRegistry``: the global default registry is never touched.
"""

import logging

from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from accounts.ip import client_ip, ip_allowed
from migration_console.core.models import AuditEvent, Channel
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.fleet import group_status_answer
from migration_console.core.services.groups import group_get, group_names
from migration_console.core.services.jobs import queued_runs, workers_live
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get, target_names

logger = logging.getLogger(__name__)

DURATION = "migration_console_migration_duration_seconds"
TOTAL = "migration_console_migrations_total"
PENDING = "migration_console_pending_migrations"
LOCK_HELD = "migration_console_lock_held"
WORKERS = "migration_console_workers"
QUEUED_RUNS = "migration_console_queued_runs"
GROUP_MEMBERS = "migration_console_group_members"
SERIES = (DURATION, TOTAL, PENDING, LOCK_HELD, WORKERS, QUEUED_RUNS, GROUP_MEMBERS)
# A group larger than this shows only per-group aggregates: a series per tenant of a
# thousand-schema fleet would swamp Prometheus.
PER_MEMBER_SERIES_UP_TO = 100


class TargetCollector:
    """Yields SPEC's four series of every configured target.

    ``migrations_total`` counts migrations per state (it can go down after a
    rollback), so it is exposed as a gauge under SPEC's name. A target that cannot
    be read is logged and left out of this scrape rather than failing the others.
    """

    def collect(self):
        duration = GaugeMetricFamily(
            DURATION,
            "Duration of each recorded migration, from the tracking table.",
            labels=["database", "version", "status"],
        )
        total = GaugeMetricFamily(
            TOTAL,
            "Number of migrations of a target per state.",
            labels=["database", "status"],
        )
        pending = GaugeMetricFamily(
            PENDING,
            "Migrations that `migrate_sql run` would apply now.",
            labels=["database"],
        )
        lock_held = GaugeMetricFamily(
            LOCK_HELD,
            "1 while a runner holds the target's advisory lock.",
            labels=["database"],
        )
        for name in target_names():
            try:
                status = target_status(target_get(name))
            except Exception as exc:
                message = getattr(exc, "message", None) or type(exc).__name__
                logger.warning("metrics: cannot read target %s: %s", name, message)
                continue
            for item in status.items:
                if item.row is not None:
                    duration.add_metric(
                        [name, item.version, item.status], (item.duration_ns or 0) / 1e9
                    )
            for state, count in status.counts().items():
                total.add_metric([name, state], count)
            pending.add_metric([name], len(status.pending))
            lock_held.add_metric([name], 1 if status.lock_holder else 0)
        members = GaugeMetricFamily(
            GROUP_MEMBERS,
            "Members of a group of targets per state (up_to_date, pending, failed, drifted, "
            "problems).",
            labels=["group", "state"],
        )
        for name in group_names():
            try:
                summaries = group_status_answer(group_get(name))["members"]
            except Exception as exc:
                message = getattr(exc, "message", None) or type(exc).__name__
                logger.warning("metrics: cannot read group %s: %s", name, message)
                continue
            for state, count in _member_states(summaries).items():
                members.add_metric([name, state], count)
            if len(summaries) <= PER_MEMBER_SERIES_UP_TO:
                for summary in summaries:
                    pending.add_metric([summary["database"]], summary["pending_count"])
        yield duration
        yield total
        yield pending
        yield lock_held
        yield members


def _member_states(summaries: list[dict]) -> dict[str, int]:
    """Each member counted once, by its worst state."""
    states = dict.fromkeys(("up_to_date", "pending", "failed", "drifted", "problems"), 0)
    for m in summaries:
        if m["problems"]:
            states["problems"] += 1
        elif m["failed_count"]:
            states["failed"] += 1
        elif m["drifted_count"]:
            states["drifted"] += 1
        elif m["pending_count"]:
            states["pending"] += 1
        else:
            states["up_to_date"] += 1
    return states


class WorkerCollector:
    """Live workers and the runs waiting for one, from the console database's job
    tables; left out of a scrape (and logged) when the console database is away."""

    def collect(self):
        workers = GaugeMetricFamily(
            WORKERS, "Migration workers with a recent heartbeat (manage.py migration_worker)."
        )
        queued = GaugeMetricFamily(
            QUEUED_RUNS, "Runs queued for a worker and not started yet.", labels=["database"]
        )
        try:
            workers.add_metric([], workers_live())
            waiting = dict(queued_runs().values_list("target").annotate(n=Count("id")).order_by())
        except DatabaseError as exc:
            logger.warning("metrics: cannot read the job queue: %s", exc)
            return
        for name in sorted(set(target_names()) | set(waiting)):
            queued.add_metric([name], waiting.get(name, 0))
        yield workers
        yield queued


def metrics_text() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TargetCollector())
    registry.register(WorkerCollector())
    return generate_latest(registry)


def _audit_refused_scrape(ip: str) -> None:
    """A refused scrape is an audit row (SPEC: Audit); if the row cannot be written
    the answer stays a 403, and the log says why."""
    try:
        audit_record(
            caller=Caller(actor="anonymous", channel=Channel.API, client_ip=ip or None),
            action="metrics",
            outcome=AuditEvent.Outcome.DENIED,
            message=f"client IP {ip or 'unknown'} is not in CONSOLE_ALLOWED_NETWORKS",
        )
    except Exception:
        logger.exception("metrics: could not record the refused scrape")


@never_cache
@require_GET
def metrics(request):
    ip = client_ip(request)
    if not ip_allowed(ip):
        logger.warning("metrics: refused client %s (not in CONSOLE_ALLOWED_NETWORKS)", ip)
        _audit_refused_scrape(ip)
        return JsonResponse({"error": "forbidden", "details": "client IP not allowed"}, status=403)
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
