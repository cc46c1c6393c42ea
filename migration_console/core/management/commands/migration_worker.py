"""``manage.py migration_worker [--concurrency N]``: executes the console's runs.

A thin command over procrastinate's worker, on the queue of runs and the queue of
the periodic recovery of stalled jobs (core/tasks.py). As many as wanted, on any
machine that reaches the console database.

SIGTERM or SIGINT stops it gracefully: no new job is taken, a run in progress
finishes its current file and starts no further one, goes back to the queue and is
resumed by another worker. The heartbeat goes on meanwhile, so nobody takes the
stopping worker for a dead one. A second signal stops it at once (as a kill would:
its run is handed over once its heartbeat is stale).
"""

import asyncio
import logging
import os
import signal
import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from migration_console.core.services.jobs import HOUSEKEEPING_QUEUE, QUEUE

logger = logging.getLogger("migration_console.worker")

# How often an idle worker looks for a job besides LISTEN/NOTIFY: a job freed by a
# retry or by the end of the job holding its target's lock is not notified.
FETCH_POLLING_SECONDS = 1.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Command(BaseCommand):
    help = "Execute the runs queued by the console and the API (procrastinate worker)."
    requires_system_checks = []  # a worker serves no URL; `manage.py check` does them

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="runs executed at once by this worker, on different targets (default 1)",
        )

    def handle(self, *args, **options):
        concurrency = options["concurrency"]
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1", returncode=2)
        if options["verbosity"] >= 2:  # procrastinate's own lines: each job (3: each poll)
            level = logging.INFO if options["verbosity"] == 2 else logging.DEBUG
            logging.getLogger("procrastinate").setLevel(level)
        from procrastinate.contrib.django import app

        with app.replace_connector(app.connector.get_worker_connector()):
            asyncio.run(self.serve(app, concurrency))

    async def serve(self, app, concurrency: int) -> None:
        from procrastinate.worker import Worker

        name = worker_name()
        heartbeat = float(settings.MIGRATION_WORKER_HEARTBEAT)
        async with app.open_async():
            app.perform_import_paths()
            worker = Worker(
                app=app,
                **{
                    **app.worker_defaults,
                    "queues": [QUEUE, HOUSEKEEPING_QUEUE],
                    "name": name,
                    "concurrency": concurrency,
                    "install_signal_handlers": False,
                    # Abort at once with reason SHUTDOWN: the run stops after its file.
                    "shutdown_graceful_timeout": 0,
                    "update_heartbeat_interval": heartbeat,
                    "stalled_worker_timeout": float(settings.MIGRATION_WORKER_STALLED_AFTER),
                    "fetch_job_polling_interval": FETCH_POLLING_SECONDS,
                },
            )
            shutdown = Shutdown(app, worker, name, heartbeat)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, shutdown.request, signum)
            logger.info(
                "migration worker %s started: queues %s, %s, concurrency %s, heartbeat every %ss",
                name,
                QUEUE,
                HOUSEKEEPING_QUEUE,
                concurrency,
                f"{heartbeat:g}",
            )
            try:
                await worker.run()
            finally:
                shutdown.finished()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        logger.info("migration worker %s stopped", name)


class Shutdown:
    """The signal handling of one worker: the first signal stops it gracefully, with
    its heartbeat kept up meanwhile (procrastinate's stops with the side tasks); a
    second one ends the process at once."""

    def __init__(self, app, worker, name: str, heartbeat: float):
        self.app = app
        self.worker = worker
        self.name = name
        self.heartbeat = heartbeat
        self.keeper: asyncio.Task | None = None

    def request(self, signum: int) -> None:
        label = signal.Signals(signum).name
        if self.keeper is not None:
            logger.warning("migration worker %s: second %s, stopping now", self.name, label)
            os._exit(128 + signum)
        logger.info(
            "migration worker %s: %s received, stopping after the current file of any run "
            "(it goes back to the queue for another worker)",
            self.name,
            label,
        )
        self.keeper = asyncio.get_running_loop().create_task(self.keep_heartbeat())
        self.worker.stop()

    async def keep_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            worker_id = self.worker.worker_id
            if worker_id is None:
                return
            try:
                await self.app.job_manager.update_heartbeat(worker_id)
            except Exception as exc:
                logger.warning("migration worker %s: heartbeat failed: %s", self.name, exc)

    def finished(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
