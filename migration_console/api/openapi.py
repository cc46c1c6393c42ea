"""The OpenAPI 3.1 document of the JSON API, served at /admin/migrations/openapi.json.

Kept true by tests/test_api_openapi.py (every real answer validates against
it) and by a schemathesis run against a live server.
"""

from functools import cache

from migration_console.api import conf

STATES = ["completed", "pending", "failed", "drifted", "missing", "out_of_order"]
# GET runs/<id> (SPEC): a refused run or a lock not acquired is an ``error``.
API_RUN_STATES = [
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
WAIT = {
    "type": "boolean",
    "default": True,
    "description": "false: answer 202 at once with the queued run instead of waiting for it",
}
RUN_STATES = [
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


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _nullable(kind: str, **extra) -> dict:
    return {"type": [kind, "null"], **extra}


def _action_request(field: str, description: str, **options: dict) -> dict:
    """The body of rollback, baseline and repair: confirm, the version, options."""
    return {
        "type": "object",
        "required": ["confirm", field],
        "additionalProperties": False,
        "properties": {
            "confirm": {"const": True, "description": "must be the JSON value true"},
            field: {"type": ["string", "integer"], "description": description, "examples": ["003"]},
            "wait": WAIT,
            **options,
        },
    }


SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "short machine-readable kind"},
            "message": {"type": "string", "description": "what went wrong, for a person"},
        },
    },
    "MigrationItem": {
        "type": "object",
        "required": ["version", "name", "status", "applied_at", "duration", "checksum"],
        "properties": {
            "version": {"type": "string", "examples": ["007"]},
            "name": {"type": "string", "examples": ["add_new_feature"]},
            "status": {"type": "string", "enum": STATES},
            "applied_at": _nullable("string", format="date-time"),
            "duration": _nullable("integer", minimum=0, description="nanoseconds"),
            "checksum": {"type": "string", "description": "SHA-256 hex"},
            "file_checksum": _nullable("string"),
            "applied_by": _nullable("string"),
            "error": _nullable("string"),
            "no_transaction": {"type": "boolean"},
            "lint": {
                "type": "object",
                "description": "pending items in status: squawk's findings for the file",
                "properties": {
                    "findings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "rule": {"type": "string", "examples": ["adding-required-field"]},
                                "level": {"type": "string", "enum": ["error", "warning"]},
                                "line": {"type": "integer"},
                                "message": {"type": "string"},
                                "help": _nullable("string"),
                            },
                        },
                    },
                    "errors": {"type": "integer", "minimum": 0},
                    "unavailable": _nullable("string"),
                },
            },
        },
    },
    "LockHolder": {
        "type": "object",
        "required": ["pid", "user", "application_name", "since"],
        "properties": {
            "pid": {"type": "integer"},
            "user": {"type": "string"},
            "application_name": {"type": "string"},
            "since": _nullable("string", format="date-time"),
        },
    },
    "Problem": {
        "type": "object",
        "description": (
            "Why the migration files would be refused (a duplicate version, a bad name, "
            "an unreadable, non-UTF-8 or empty file, a down file without its up file, "
            "a transactional file with its own BEGIN/COMMIT). Reads still answer; run, "
            "rollback, baseline and repair refuse while any is listed."
        ),
        "required": ["file", "message"],
        "properties": {
            "file": {"type": "string", "description": "the file (or directory) at fault"},
            "message": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "database",
            "all_migrations",
            "pending_migrations",
            "applied_migrations",
            "total",
            "pending_count",
            "applied_count",
            "problems",
        ],
        "properties": {
            "database": {"type": "string"},
            "all_migrations": {"type": "array", "items": _ref("MigrationItem")},
            "pending_migrations": {"type": "array", "items": _ref("MigrationItem")},
            "applied_migrations": {"type": "array", "items": _ref("MigrationItem")},
            "total": {"type": "integer", "minimum": 0},
            "pending_count": {"type": "integer", "minimum": 0},
            "applied_count": {"type": "integer", "minimum": 0},
            "lock_holder": {"oneOf": [_ref("LockHolder"), {"type": "null"}]},
            "plan_hash": {"type": "string"},
            "problems": {"type": "array", "items": _ref("Problem")},
        },
    },
    "History": {
        "type": "object",
        "required": ["total", "migrations", "problems"],
        "properties": {
            "database": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "migrations": {"type": "array", "items": _ref("MigrationItem")},
            "problems": {"type": "array", "items": _ref("Problem")},
        },
    },
    "RunRequest": {
        "type": "object",
        "required": ["confirm"],
        "additionalProperties": False,
        "properties": {"confirm": {"const": True, "description": "must be the JSON value true"}},
    },
    "RunStartRequest": {
        "type": "object",
        "required": ["confirm"],
        "additionalProperties": False,
        "properties": {
            "confirm": {"const": True, "description": "must be the JSON value true"},
            "wait": WAIT,
        },
    },
    "Queued": {
        "type": "object",
        "description": "the job is queued (or still running): follow it at `url`",
        "required": ["status", "run", "url"],
        "properties": {
            "status": {"const": "queued"},
            "run": {"type": "integer"},
            "url": {"type": "string", "examples": ["/admin/migrations/runs/42"]},
        },
    },
    "RunDetail": {
        "type": "object",
        "required": [
            "run",
            "database",
            "action",
            "state",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "attempts",
            "steps",
            "blockers",
            "message",
        ],
        "properties": {
            "run": {"type": "integer"},
            "database": {"type": "string"},
            "action": {"type": "string", "examples": ["run", "rollback"]},
            "state": {"enum": API_RUN_STATES},
            "requested_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _nullable("string", format="date-time"),
            "finished_at": _nullable("string", format="date-time"),
            "attempts": {
                "type": "integer",
                "minimum": 0,
                "description": "executions started (a worker that died adds one)",
            },
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "name", "status", "duration", "error"],
                    "properties": {
                        "version": {"type": "string"},
                        "name": {"type": "string"},
                        "status": {"type": "string", "examples": ["completed", "failed"]},
                        "duration": _nullable("integer", description="nanoseconds"),
                        "error": _nullable("string"),
                    },
                },
            },
            "blockers": {"type": "array"},
            "message": {"type": "string"},
        },
    },
    "Step": {
        "type": "object",
        "required": ["version", "name", "status", "duration"],
        "properties": {
            "version": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["completed", "failed"]},
            "duration": {"type": "integer", "minimum": 0, "description": "nanoseconds"},
            "error": _nullable("string"),
        },
    },
    "RunSuccess": {
        "type": "object",
        "required": ["status", "message", "applied_count", "applied_migrations"],
        "properties": {
            "status": {"const": "success"},
            "message": {"type": "string"},
            "applied_count": {"type": "integer", "minimum": 1},
            "applied_migrations": {"type": "array", "items": _ref("Step")},
        },
    },
    "RunCancelled": {
        "type": "object",
        "description": "cancelled (POST runs/<id>/cancel) before or while it ran",
        "required": ["status", "message", "applied_count", "applied_migrations"],
        "properties": {
            "status": {"const": "cancelled"},
            "message": {"type": "string"},
            "applied_count": {"type": "integer", "minimum": 0},
            "applied_migrations": {"type": "array", "items": _ref("Step")},
        },
    },
    "RunUpToDate": {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"const": "up_to_date"},
            "message": {"const": "no pending migrations"},
        },
    },
    "RunFailed": {
        "type": "object",
        "required": ["error", "details", "version"],
        "properties": {
            "error": {"const": "migration failed"},
            "details": {"type": "string", "description": "the database's message"},
            "version": {"type": "string", "description": "the migration that failed"},
            "applied_count": {"type": "integer", "minimum": 0},
            "applied_migrations": {"type": "array", "items": _ref("Step")},
        },
    },
    "RollbackRequest": _action_request(
        "to", "roll back every applied migration at or above this version"
    ),
    "BaselineRequest": _action_request(
        "to", "record every file up to and including this version as completed, not run"
    ),
    "RepairRequest": _action_request(
        "version",
        "the failed or drifted migration to resolve",
        mark_applied={
            "type": "boolean",
            "default": False,
            "description": "failed only: record it completed (fixed by hand) instead of "
            "clearing the failure so that run applies it again",
        },
    ),
    "ActionResult": {
        "type": "object",
        "required": ["status", "action", "message", "count", "migrations"],
        "properties": {
            "status": {"enum": ["success", "up_to_date", "cancelled"]},
            "action": {"type": "string", "examples": ["rollback"]},
            "message": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "migrations": {"type": "array", "items": _ref("Step")},
        },
    },
    "ActionFailed": {
        "type": "object",
        "required": ["error", "details", "version"],
        "properties": {
            "error": {"type": "string", "examples": ["rollback failed"]},
            "details": {"type": "string", "description": "the database's message"},
            "version": {"type": "string"},
            "message": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "migrations": {"type": "array", "items": _ref("Step")},
        },
    },
    "Locked": {
        "type": "object",
        "required": ["error", "message", "holder"],
        "properties": {
            "error": {"const": "locked"},
            "message": {"type": "string"},
            "holder": {"oneOf": [_ref("LockHolder"), {"type": "null"}]},
        },
    },
    "CancelResult": {
        "type": "object",
        "required": ["id", "target", "action", "state", "finished", "message"],
        "properties": {
            "id": {"type": "integer"},
            "target": {"type": "string"},
            "action": {"type": "string", "examples": ["run"]},
            "state": {"enum": RUN_STATES},
            "finished": {"type": "boolean"},
            "cancel_requested_by": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "UnlockRequest": {
        "type": "object",
        "required": ["confirm"],
        "additionalProperties": False,
        "properties": {
            "confirm": {"const": True, "description": "must be the JSON value true"},
            "force": {
                "type": "boolean",
                "default": False,
                "description": "also terminate a live run of this console (cancel it instead)",
            },
        },
    },
    "UnlockResult": {
        "type": "object",
        "required": ["database", "status", "holder", "run", "message"],
        "properties": {
            "database": {"type": "string"},
            "status": {"enum": ["unlocked", "not_locked"]},
            "holder": {"oneOf": [_ref("LockHolder"), {"type": "null"}]},
            "run": _nullable("integer", description="the run of this console that held it"),
            "message": {"type": "string"},
        },
    },
    "Refused": {
        "type": "object",
        "required": ["error", "reason", "message", "versions"],
        "properties": {
            "error": {"const": "refused"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
        },
    },
}

_ERROR = _ref("Error")
DATABASE_PARAMETER = {
    "name": "database",
    "in": "query",
    "required": False,
    "description": "the target's name (default db_main); an unknown name is 404",
    "schema": {"type": "string", "default": "db_main", "maxLength": 63},
}
_COMMON_ERRORS = {
    "401": _json(_ERROR, "no, invalid, expired or revoked token"),
    "403": _json(_ERROR, "not an active superuser, client IP not allowed, or CSRF failed"),
    "404": _json(_ERROR, "unknown database"),
    "405": _json(_ERROR, "wrong method (the Allow header names the right one)"),
    "429": _json(_ERROR, "rate limited"),
    "500": _json(_ERROR, "internal error (never a traceback)"),
    "503": _json(_ERROR, "the target database is unreachable"),
}


def _read_operation(operation_id: str, summary: str, schema: str) -> dict:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [DATABASE_PARAMETER],
            "responses": {"200": _json(_ref(schema), summary), **_COMMON_ERRORS},
        }
    }


def _action_operation(
    operation_id: str, summary: str, request: str, *, done: str, refused: str, failed: str
) -> dict:
    """POST rollback, baseline or repair: one recorded action under the advisory lock."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [DATABASE_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": _json(_ref("ActionResult"), done),
                "202": _json(_ref("Queued"), "queued, not finished within the wait"),
                "400": _json(
                    _ERROR, "malformed body, no confirm: true, or a bad or unknown version"
                ),
                "409": _json({"oneOf": [_ref("Locked"), _ref("Refused")]}, refused),
                **_COMMON_ERRORS,
                "500": _json({"oneOf": [_ref("ActionFailed"), _ERROR]}, failed),
            },
        }
    }


def _run_detail_operation() -> dict:
    return {
        "get": {
            "operationId": "getRun",
            "summary": "one run, rollback, baseline or repair as its worker left it",
            "parameters": [
                {
                    "name": "run_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
            "responses": {
                "200": _json(_ref("RunDetail"), "the run"),
                **_COMMON_ERRORS,
                "404": _json(_ERROR, "no such run"),
            },
        }
    }


def _cancel_operation() -> dict:
    return {
        "post": {
            "operationId": "cancelRun",
            "summary": "withdraw a queued run, or stop a running one after its current "
            "statement (its transactional file rolls back, no further file starts)",
            "parameters": [
                {
                    "name": "run_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("RunRequest")}},
            },
            "responses": {
                "200": _json(_ref("CancelResult"), "the run has ended (cancelled, normally)"),
                "202": _json(
                    _ref("CancelResult"), "asked to stop, but its runner has not stopped in 5 s"
                ),
                "400": _json(_ERROR, "malformed body, or no confirm: true"),
                "409": _json(_ref("Refused"), "the run has already finished"),
                **_COMMON_ERRORS,
                "404": _json(_ERROR, "no such run"),
            },
        }
    }


def _unlock_operation() -> dict:
    return {
        "post": {
            "operationId": "breakLock",
            "summary": "terminate the session holding the target's advisory lock",
            "parameters": [DATABASE_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("UnlockRequest")}},
            },
            "responses": {
                "200": _json(_ref("UnlockResult"), "the lock is free, or was not held"),
                "400": _json(_ERROR, "malformed body, no confirm: true, or a non-boolean force"),
                "409": _json(
                    {"oneOf": [_ref("Refused"), _ref("Locked")]},
                    "held by a live run of this console (cancel it, or force), or the "
                    "holder could not be terminated",
                ),
                **_COMMON_ERRORS,
            },
        }
    }


@cache
def openapi_document() -> dict:
    prefix = conf.PREFIX
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Migration Console API",
            "version": "1.0.0",
            "description": (
                "Status, run, history, rollback, baseline and repair of SQL migrations per "
                "target database; cancel a run, break a stuck lock. Every call "
                "needs `Authorization: Bearer <token>` of an active superuser (or a superuser "
                "session with CSRF) from an allowed network. Durations are nanoseconds. "
                "Errors are JSON objects with `error` and `message`."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            f"{prefix}status": _read_operation(
                "getStatus", "state of every migration of a target", "Status"
            ),
            f"{prefix}history": _read_operation(
                "getHistory", "recorded migrations, newest first", "History"
            ),
            f"{prefix}run": {
                "post": {
                    "operationId": "runMigrations",
                    "summary": "queue a run of the pending migrations for a worker and wait "
                    "for it (MIGRATION_API_WAIT seconds at most)",
                    "parameters": [DATABASE_PARAMETER],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("RunStartRequest")}},
                    },
                    "responses": {
                        "200": _json(
                            {
                                "oneOf": [
                                    _ref("RunSuccess"),
                                    _ref("RunUpToDate"),
                                    _ref("RunCancelled"),
                                ]
                            },
                            "applied, nothing was pending, or cancelled meanwhile",
                        ),
                        "202": _json(_ref("Queued"), '"wait": false, or the wait ended first'),
                        "400": _json(_ERROR, "malformed or oversized body, or no confirm: true"),
                        "409": _json(
                            {"oneOf": [_ref("Locked"), _ref("Refused")]},
                            "another run holds the lock, or the run would be unsafe",
                        ),
                        **_COMMON_ERRORS,
                        "500": _json(
                            {"oneOf": [_ref("RunFailed"), _ERROR]},
                            "a migration failed (details: the database's message)",
                        ),
                    },
                }
            },
            f"{prefix}rollback": _action_operation(
                "rollbackMigrations",
                "run the down files newest first down to and including `to`",
                "RollbackRequest",
                done="rolled back, or nothing to roll back",
                refused="another run holds the lock, or a down file is missing",
                failed="a down file failed (details: the database's message)",
            ),
            f"{prefix}baseline": _action_operation(
                "baselineMigrations",
                "record every file up to `to` as completed without running it",
                "BaselineRequest",
                done="recorded, or every file up to `to` was already recorded",
                refused="another run holds the lock, or tracking rows exist at or above `to`",
                failed="recording failed (details: the database's message)",
            ),
            f"{prefix}repair": _action_operation(
                "repairMigration",
                "resolve a failed (clear, or mark_applied) or drifted (re-record) migration",
                "RepairRequest",
                done="repaired",
                refused="another run holds the lock, or the tracking row changed",
                failed="the repair failed (details: the database's message)",
            ),
            f"{prefix}runs/{{run_id}}": _run_detail_operation(),
            f"{prefix}runs/{{run_id}}/cancel": _cancel_operation(),
            f"{prefix}unlock": _unlock_operation(),
            f"{prefix}openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "this document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "405": _json(_ERROR, "wrong method"),
                        "429": _json(_ERROR, "rate limited"),
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `manage.py create_api_token USER`",
                }
            },
        },
    }
