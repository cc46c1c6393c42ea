from django.conf import settings
from django.db import models


class SchemaMigration(models.Model):
    """Mirror of ``<schema>.schema_migrations`` in a target (read with ``.using(name)``).

    The table belongs to the target and is written only by the runner, in the
    same transaction as the migration it records.
    """

    version = models.TextField(primary_key=True)
    name = models.TextField()
    checksum = models.TextField()
    status = models.TextField()
    applied_at = models.DateTimeField()
    duration_ns = models.BigIntegerField()
    applied_by = models.TextField()
    error = models.TextField(null=True)  # noqa: DJ001 - mirrors the target's nullable column

    class Meta:
        managed = False
        db_table = "schema_migrations"
        ordering = ["version"]

    def __str__(self) -> str:
        return f"{self.version}_{self.name} ({self.status})"


class Channel(models.TextChoices):
    CONSOLE = "console"
    API = "api"
    CLI = "cli"
    STARTUP = "startup"


class Run(models.Model):
    """One attempt to change a target, from any channel; the console polls it."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCESS = "success"
        UP_TO_DATE = "up_to_date"
        FAILED = "failed"
        REFUSED = "refused"
        LOCKED = "locked"
        ERROR = "error"
        CANCELLED = "cancelled"
        # Change management: a request waiting for approvers, a run waiting for its
        # time or its window, and the ends of a request that never ran.
        AWAITING_APPROVAL = "awaiting_approval"
        SCHEDULED = "scheduled"
        REJECTED = "rejected"
        EXPIRED = "expired"
        STALE = "stale"

    FINISHED_STATES = (
        State.SUCCESS,
        State.UP_TO_DATE,
        State.FAILED,
        State.REFUSED,
        State.LOCKED,
        State.ERROR,
        State.CANCELLED,
        State.REJECTED,
        State.EXPIRED,
        State.STALE,
    )

    target = models.CharField(max_length=128)  # a target, a group, or <group>/<schema>
    action = models.CharField(max_length=32, default="run")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    requested_by = models.CharField(max_length=150)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    plan_hash = models.CharField(max_length=64, blank=True)
    planned = models.JSONField(default=list)
    steps = models.JSONField(default=list)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    message = models.TextField(blank=True)
    current_version = models.CharField(max_length=64, blank=True)
    backup_file = models.CharField(max_length=500, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    # The action's own arguments (rollback's version, repair's mark_applied, run's
    # options), so whichever worker executes the job needs nothing else.
    arguments = models.JSONField(default=dict, blank=True)
    job_id = models.BigIntegerField(null=True, blank=True)  # its procrastinate job
    attempts = models.PositiveIntegerField(default=0)  # executions started (a retry adds one)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    # The current file's wait for a table lock (attempt, blockers), kept after a file
    # that ran out of attempts; null otherwise.
    lock_wait = models.JSONField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)  # not before (a schedule or a window)
    approvals_required = models.PositiveSmallIntegerField(default=0)
    break_glass = models.BooleanField(default=False)  # a CLI run past the target's policy
    # A group run is a parent Run; each member's run is an ordinary Run pointing at it.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.action} #{self.pk} on {self.target} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in self.FINISHED_STATES


class Approval(models.Model):
    """One superuser's decision on a requested run (approve or reject), with a comment."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    username = models.CharField(max_length=150)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "username"], name="one_decision_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.username} {self.decision}s run #{self.run_id}"


class AuditEvent(models.Model):
    """One attempt from any channel. Append-only: no channel changes or deletes rows."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        UP_TO_DATE = "up_to_date"
        FAILED = "failed"
        DENIED = "denied"
        RATE_LIMITED = "rate_limited"
        REFUSED = "refused"
        LOCKED = "locked"
        ERROR = "error"
        STARTED = "started"
        VIEWED = "viewed"
        CANCELLED = "cancelled"
        REQUESTED = "requested"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        STALE = "stale"
        SCHEDULED = "scheduled"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, db_index=True)
    # No database constraint: deleting a user or run must never touch an audit row
    # (a trigger in the migration refuses UPDATE and DELETE on this table).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=128, blank=True)
    action = models.CharField(max_length=32, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    migrations = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    token_prefix = models.CharField(max_length=16, blank=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"
