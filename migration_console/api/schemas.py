"""The API's request and response schemas: django-ninja generates the OpenAPI document
from them (api/service.py), and request bodies are validated by them.

Request bodies refuse unknown keys and name the problem as SPEC's 400 does (the
validators raise ``bad_request`` errors whose message is the answer's). Answers are
rendered by the services' own dicts; these models describe them, and extra keys
are allowed where a parallel change may add some (runs, steps).
"""

import json
import re
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

VERSION = re.compile(r"[0-9]{1,64}")  # as maintenance.py reads a version
BAD_REQUEST = "bad_request"  # the pydantic error type whose message is the 400's


def _shown(value) -> str:
    return json.dumps(value, default=str)[:40]


def _refuse(message: str, value=None) -> PydanticCustomError:
    # The message is a template: hostile input goes in the context, never in it.
    return PydanticCustomError(BAD_REQUEST, message, {"got": _shown(value)})


# --- request bodies ---------------------------------------------------------------


MISSING = object()  # a required key the body lacks: its field validator names it


class Confirmed(BaseModel):
    """A changing request's body: ``"confirm": true`` and only the declared keys."""

    model_config = ConfigDict(extra="forbid")

    confirm: Literal[True] = Field(description="must be the JSON value true")

    @model_validator(mode="before")
    @classmethod
    def _known_keys_first(cls, data):
        """Unknown keys before any value; a missing key is left to its field's validator
        so that problems are named in field order (as the seed answered)."""
        if not isinstance(data, dict):
            raise _refuse("the body must be a JSON object")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            names = ", ".join(repr(key[:40]) for key in unknown[:5])
            allowed = ", ".join(sorted(cls.model_fields))
            raise PydanticCustomError(
                BAD_REQUEST,
                "unknown field(s): {names}; allowed: {allowed}",
                {"names": names, "allowed": allowed},
            )
        required = (name for name, info in cls.model_fields.items() if info.is_required())
        return {**{name: MISSING for name in required}, **data}

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_is_true(cls, value):
        if value is MISSING:
            raise PydanticCustomError(BAD_REQUEST, '"confirm": true is required')
        if value is not True:
            raise _refuse('"confirm" must be the JSON value true, got {got}', value)
        return value

    @field_validator("wait", "force", "mark_applied", mode="before", check_fields=False)
    @classmethod
    def _a_json_boolean(cls, value, info):
        if not isinstance(value, bool):
            raise PydanticCustomError(
                BAD_REQUEST,
                '"{field}" must be true or false, got {got}',
                {"field": info.field_name, "got": _shown(value)},
            )
        return value


WAIT = "false: answer 202 at once with the queued run instead of waiting for it"


class Waited(Confirmed):
    wait: bool = Field(True, description=WAIT)


class RunStart(Waited):
    """``POST run``: confirm, whether to wait for the worker, and when to start."""

    group: str | None = Field(
        None,
        description="run every member of this group of targets (a fleet) instead of "
        "?database=; answers 202 with the group's parent run",
    )
    run_at: datetime | None = Field(
        None,
        description="ISO 8601 with a time zone: not before then (state scheduled); "
        "a target with a window also waits for its next opening",
        examples=["2026-12-05T02:00:00Z"],
    )

    @field_validator("group", mode="before")
    @classmethod
    def _group_name(cls, value):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 63):
            raise _refuse('"group" must be a group\'s name, got {got}', value)
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _aware_iso_8601(cls, value):
        if value is None:
            return value
        if not isinstance(value, str):
            raise _refuse('"run_at" must be an ISO 8601 date and time, got {got}', value)
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _refuse('"run_at" is not an ISO 8601 date and time: {got}', value) from None
        if moment.tzinfo is None:
            raise _refuse(
                '"run_at" needs a time zone (e.g. 2026-12-05T02:00:00Z or +01:00), got {got}',
                value,
            )
        return moment


class DecisionRequest(Confirmed):
    """``POST runs/<id>/approve`` or ``.../reject``."""

    comment: str = Field("", max_length=2000, description="why; shown on the request")

    @field_validator("comment", mode="before")
    @classmethod
    def _text(cls, value):
        if not isinstance(value, str):
            raise _refuse('"comment" must be a string, got {got}', value)
        return value


class CancelRequest(Confirmed):
    """``POST runs/<id>/cancel``."""


class UnlockRequest(Confirmed):
    """``POST unlock``."""

    force: bool = Field(
        False, description="also terminate a live run of this console (cancel it instead)"
    )


VersionRef = str | int


class _Versioned(Waited):
    """Rollback, baseline and repair name one version: digits, as a string or a number."""

    FIELD: ClassVar[str] = "to"
    MEANING: ClassVar[str] = ""

    @field_validator("to", "version", mode="before", check_fields=False)
    @classmethod
    def _digits(cls, value):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PydanticCustomError(
                BAD_REQUEST, '"{field}" must be {meaning}, e.g. "003"', cls._words()
            )
        if not VERSION.fullmatch(str(value).strip()):
            # Refused here, not by the worker: the job's arguments hold only what can run.
            raise PydanticCustomError(
                BAD_REQUEST,
                '"{field}" must be {meaning}: digits, e.g. "003", got {got}',
                {**cls._words(), "got": _shown(value)},
            )
        return str(value)

    @classmethod
    def _words(cls) -> dict:
        return {"field": cls.FIELD, "meaning": cls.MEANING}


_VERSION_DOC = {"examples": ["003"]}


class RollbackRequest(_Versioned):
    MEANING: ClassVar[str] = "the version to roll back to"
    to: VersionRef = Field(
        description="roll back every applied migration at or above this version",
        json_schema_extra=_VERSION_DOC,
    )


class BaselineRequest(_Versioned):
    MEANING: ClassVar[str] = "the version to baseline up to"
    to: VersionRef = Field(
        description="record every file up to and including this version as completed, not run",
        json_schema_extra=_VERSION_DOC,
    )


class RepairRequest(_Versioned):
    FIELD: ClassVar[str] = "version"
    MEANING: ClassVar[str] = "the version to repair"
    version: VersionRef = Field(
        description="the failed or drifted migration to resolve", json_schema_extra=_VERSION_DOC
    )
    mark_applied: bool = Field(
        False,
        description="failed only: record it completed (fixed by hand) instead of clearing "
        "the failure so that run applies it again",
    )


# --- answers ----------------------------------------------------------------------

Nanoseconds = Annotated[int, Field(ge=0, description="nanoseconds")]


class Error(BaseModel):
    """Every refusal: a short machine-readable ``error`` and a ``message`` for a person,
    sometimes with more keys (``holder``, ``reason``, ``versions``)."""

    model_config = ConfigDict(extra="allow")
    error: str
    message: str


class LintFinding(BaseModel):
    rule: str = Field(examples=["adding-required-field"])
    level: Literal["error", "warning"]
    line: int
    message: str
    help: str | None = None


class Lint(BaseModel):
    """Pending items in status: squawk's findings for the file."""

    findings: list[LintFinding]
    errors: int = Field(ge=0)
    unavailable: str | None = None


class MigrationItem(BaseModel):
    version: str = Field(examples=["007"])
    name: str = Field(examples=["add_new_feature"])
    status: Literal["completed", "pending", "failed", "drifted", "missing", "out_of_order"]
    applied_at: datetime | None
    duration: Nanoseconds | None
    checksum: str = Field(description="SHA-256 hex")
    file_checksum: str | None = None
    applied_by: str | None = None
    error: str | None = None
    no_transaction: bool = False
    lint: Lint | None = None


class LockHolder(BaseModel):
    pid: int
    user: str
    application_name: str
    since: datetime | None


class Problem(BaseModel):
    """Why the migration files would be refused (a duplicate version, a bad name, an
    unreadable, non-UTF-8 or empty file, a down file without its up file, a
    transactional file with its own BEGIN/COMMIT). Reads still answer; run, rollback,
    baseline and repair refuse while any is listed."""

    file: str = Field(description="the file (or directory) at fault")
    message: str


class Status(BaseModel):
    database: str
    all_migrations: list[MigrationItem]
    pending_migrations: list[MigrationItem]
    applied_migrations: list[MigrationItem]
    total: int = Field(ge=0)
    pending_count: int = Field(ge=0)
    applied_count: int = Field(ge=0)
    lock_holder: LockHolder | None = None
    plan_hash: str = ""
    problems: list[Problem]


class GroupMember(BaseModel):
    database: str = Field(examples=["tenants/tenant_001"])
    pending_count: int = Field(ge=0)
    applied_count: int = Field(ge=0)
    failed_count: int = Field(ge=0)
    drifted_count: int = Field(ge=0)
    problems: list[Problem]


class GroupStatus(BaseModel):
    """``?group=NAME``: one summary per member of a group of targets."""

    group: str
    members: list[GroupMember]
    total_members: int = Field(ge=0)
    totals: dict[str, int] = {}


class History(BaseModel):
    database: str = ""
    total: int = Field(ge=0)
    migrations: list[MigrationItem]
    problems: list[Problem]


class Queued(BaseModel):
    """The job is queued (or still running): follow it at ``url``."""

    status: Literal["queued", "scheduled", "awaiting_approval"]
    run: int
    url: str = Field(examples=["/admin/migrations/runs/42"])
    run_at: datetime | None = Field(None, description="scheduled: not before then")
    approvals_required: int | None = Field(
        None, description="awaiting_approval: distinct superusers (not the requester) needed"
    )


class Step(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    name: str
    status: Literal["completed", "failed"]
    duration: Nanoseconds
    error: str | None = None
    attempts: int | None = Field(None, description="executions of this file's step")


class RunSuccess(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["success"]
    message: str
    applied_count: int = Field(ge=1)
    applied_migrations: list[Step]


class RunUpToDate(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["up_to_date"]
    message: Literal["no pending migrations"]


class RunCancelled(BaseModel):
    """Cancelled (``POST runs/<id>/cancel``) before or while it ran."""

    model_config = ConfigDict(extra="allow")
    status: Literal["cancelled"]
    message: str
    applied_count: int = Field(ge=0)
    applied_migrations: list[Step]


class RunFailed(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: Literal["migration failed"]
    details: str = Field(description="the database's message")
    version: str = Field(description="the migration that failed")
    applied_count: int = Field(0, ge=0)
    applied_migrations: list[Step] = []


class ActionResult(BaseModel):
    """Rollback, baseline or repair done (or nothing to do)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["success", "up_to_date", "cancelled"]
    action: str = Field(examples=["rollback"])
    message: str
    count: int = Field(ge=0)
    migrations: list[Step]


class ActionFailed(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = Field(examples=["rollback failed"])
    details: str = Field(description="the database's message")
    version: str
    message: str = ""
    count: int = Field(0, ge=0)
    migrations: list[Step] = []


class Blocker(BaseModel):
    """A session the run's lock wait or statement waited on."""

    model_config = ConfigDict(extra="allow")
    pid: int
    user: str | None = None
    application_name: str | None = None
    state: str | None = None
    xact_age_seconds: float | None = None
    query: str | None = None


class RunStep(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    name: str
    status: str = Field(examples=["completed", "failed"])
    duration: int | None = Field(description="nanoseconds")
    error: str | None
    attempts: int | None = None


RUN_STATES = Literal[
    "awaiting_approval",
    "scheduled",
    "queued",
    "running",
    "success",
    "up_to_date",
    "failed",
    "cancelled",
    "rejected",
    "expired",
    "stale",
    "error",
]


class RunDetail(BaseModel):
    """One run, rollback, baseline or repair as its worker left it (SPEC: Runs are jobs)."""

    model_config = ConfigDict(extra="allow")
    run: int
    database: str
    action: str = Field(examples=["run", "rollback"])
    state: RUN_STATES
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(ge=0, description="executions started (a worker that died adds one)")
    steps: list[RunStep]
    blockers: list[Blocker]
    message: str


class Locked(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: Literal["locked"]
    message: str
    holder: LockHolder | None


class Refused(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: Literal["refused"]
    reason: str
    message: str
    versions: list[str]


class CancelResult(BaseModel):
    id: int
    target: str
    action: str = Field(examples=["run"])
    state: Literal[
        "queued",
        "running",
        "success",
        "up_to_date",
        "failed",
        "refused",
        "locked",
        "error",
        "cancelled",
    ]
    finished: bool
    cancel_requested_by: str = ""
    message: str


class UnlockResult(BaseModel):
    database: str
    status: Literal["unlocked", "not_locked"]
    holder: LockHolder | None
    run: int | None = Field(description="the run of this console that held it")
    message: str
