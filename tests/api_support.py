"""Helpers shared by the JSON API tests (tests/test_api_*.py, tests/test_tokens.py)."""

import json

from migration_console.core.models import Run

API = "/admin/migrations/"
SECRETS = ("Traceback", "<html", "<!DOCTYPE", "password", "hunter2", "dbname=")


def bearer(raw: str) -> dict:
    return {"authorization": f"Bearer {raw}"}


def run_body(value=True) -> str:
    return json.dumps({"confirm": value})


def assert_json_error(response, status: int, error: str | None = None) -> dict:
    """A JSON error answer with ``status``: never HTML, a traceback or a secret."""
    text = response.content.decode()
    assert response.status_code == status, text[:500]
    assert response["Content-Type"] == "application/json", text[:200]
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked: {text[:300]}"
    body = json.loads(text)
    assert isinstance(body.get("error"), str) and body["error"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def assert_nothing_ran(target) -> None:
    assert not target.table_exists("t1")
    assert not any(row[0] == "completed" for row in target.tracking().values())
    assert not Run.objects.exists()
