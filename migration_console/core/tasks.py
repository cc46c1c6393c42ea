"""The console's procrastinate tasks (found by procrastinate's Django autodiscovery).

* ``execute_run``: one attempt at a queued Run (``jobs.run_start`` defers it with
  ``lock=target:<name>``), through ``job_execute``. A worker shutting down aborts it
  with reason SHUTDOWN: the run stops before its next file, goes back to ``queued``
  and the job is retried (procrastinate retries a job aborted by a shutdown when its
  retry strategy allows it), so another worker resumes it.
* ``recover_stalled_jobs``: every ``MIGRATION_WORKER_RECOVERY_EVERY`` seconds, hands
  the jobs of dead workers (no heartbeat for ``MIGRATION_WORKER_STALLED_AFTER``) back
  to the queue. A SIGKILLed worker's sessions are gone within seconds (lock freed,
  open file rolled back); the next worker resumes from the tracking table.
"""

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.exceptions import JobAborted
from procrastinate.job_context import AbortReason

# job_execute (the runner, approvals, fleets, maintenance ...) is imported by the
# tasks themselves: procrastinate's Django app imports this module in every
# process at start-up, including each ``migrate_sql`` call, which never runs a job.
from migration_console.core.services.jobs import (
    HOUSEKEEPING_QUEUE,
    QUEUE,
    SHUTDOWN_REASON,
    stalled_after,
)

logger = logging.getLogger("migration_console.worker")

# Finished recovery jobs are deleted after this long (one every few seconds).
HOUSEKEEPING_KEEP_HOURS = 1


def _stop_reason(context: JobContext):
    def reason() -> str | None:
        abort = context.abort_reason()
        if abort is AbortReason.SHUTDOWN:
            return SHUTDOWN_REASON
        if abort is AbortReason.USER_REQUEST:
            return "aborted in the job queue"
        return None

    return reason


@app.task(
    name="migration_console.execute_run",
    queue=QUEUE,
    pass_context=True,
    retry=RetryStrategy(retry_exceptions=[JobAborted]),
)
def execute_run(context: JobContext, run_id: int) -> str:
    from migration_console.core.services.job_execute import RunInterrupted, run_job_execute

    try:
        result = run_job_execute(run_id=run_id, stop_reason=_stop_reason(context))
    except RunInterrupted as exc:
        logger.info("%s; another worker resumes it", exc)
        raise JobAborted(str(exc)) from exc
    logger.info("%s", result)
    return result


@app.task(name="migration_console.release_run", queue=QUEUE)
def release_run(run_id: int) -> str:
    """A scheduled run's time has come (``jobs.job_defer``): queue its locked job."""
    from migration_console.core.services.jobs import run_release

    return run_release(run_id)


def _still_applying(job_id: int) -> bool:
    # Imported on a thread (sync_to_async), never on the worker's event loop.
    from migration_console.core.services.job_execute import run_still_applying

    return run_still_applying(job_id)


def _every_few_seconds() -> str:
    seconds = min(59, max(1, round(settings.MIGRATION_WORKER_RECOVERY_EVERY)))
    return f"* * * * * */{seconds}"  # croniter: a sixth field is the seconds


@app.periodic(cron=_every_few_seconds(), periodic_id="recover-stalled-jobs")
@app.task(name="migration_console.recover_stalled_jobs", queue=HOUSEKEEPING_QUEUE)
async def recover_stalled_jobs(timestamp: int) -> str:
    manager = app.job_manager
    after = stalled_after()
    handed = []
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=after):
        if job.queue == QUEUE and await sync_to_async(_still_applying)(job.id):
            continue
        try:
            await manager.retry_job(job)
        except Exception as exc:  # handed over by another worker meanwhile
            logger.info("stalled job %s: not handed over (%s)", job.id, exc)
            continue
        handed.append(job.id)
        logger.warning(
            "job %s (%s %s) belonged to a worker silent for %ss: handed to another worker",
            job.id,
            job.task_name,
            job.task_kwargs,
            f"{after:g}",
        )
    await manager.delete_old_jobs(
        nb_hours=HOUSEKEEPING_KEEP_HOURS,
        queue=HOUSEKEEPING_QUEUE,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )
    return f"handed over: {handed}" if handed else "no stalled job"


@app.periodic(cron="* * * * *", periodic_id="expire-requests")
@app.task(name="migration_console.expire_requests", queue=HOUSEKEEPING_QUEUE)
def expire_requests(timestamp: int) -> str:
    """Requests left unapproved for MIGRATION_REQUEST_TTL end ``expired``."""
    from migration_console.core.services.approvals import requests_expire

    expired = requests_expire()
    return f"expired: {expired}" if expired else "no request expired"
