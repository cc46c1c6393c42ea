"""The OpenAPI document stays true: its paths are the API's, and every answer the API
gives in these scenarios is documented for its status and validates against it."""

import json
import re
import time

import jsonschema_rs
import psycopg
import pytest
from django.core.cache import cache
from django.http import HttpResponse

from accounts.tokens import token_create
from migration_console.api.openapi import openapi_document
from migration_console.core.services.locking import lock_key
from tests.api_support import API, bearer, run_body
from tests.conftest import write_numbered

pytestmark = pytest.mark.django_db(transaction=True)  # runs are jobs: a worker reads them


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


def assert_documented(response, path: str, method: str) -> None:
    doc = openapi_document()
    operation = doc["paths"][API + path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} answered undocumented {status}"
    content = operation["responses"][status]["content"]
    assert response["Content-Type"] in content
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [content[response["Content-Type"]]["schema"]],
    }
    errors = [
        error.message
        for error in jsonschema_rs.validator_for(schema).iter_errors(json.loads(response.content))
    ]
    assert not errors, f"{method} {path} {status}: {errors[:3]}"


def test_the_document_describes_exactly_the_api_paths():
    from migration_console.api import urls

    routes = {  # Django's <int:run_id> is OpenAPI's {run_id}
        "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        for pattern in urls.urlpatterns
        if not str(pattern.pattern).startswith("^")  # the JSON 404 catch-all
    }
    assert routes == set(openapi_document()["paths"])
    assert {API + "status", API + "run", API + "history"} <= routes
    assert openapi_document()["openapi"] == "3.1.0"


def test_the_documents_schemas_are_valid_json_schema():
    for name, schema in openapi_document()["components"]["schemas"].items():
        root = {"components": openapi_document()["components"], "allOf": [schema]}
        assert jsonschema_rs.validator_for(root), name


def test_a_schema_rejects_a_wrong_shape_so_the_checks_below_can_fail(client, target):
    response = client.get(API + "status")
    assert response.status_code == 401
    with pytest.raises(AssertionError, match="undocumented"):
        assert_documented(response, "openapi.json", "GET")
    wrong = HttpResponse(json.dumps({"status": "success"}), content_type="application/json")
    with pytest.raises(AssertionError, match="not valid under any of the schemas"):
        assert_documented(wrong, "run", "POST")


def test_every_answer_in_a_full_scenario_matches_the_document(
    client, target, django_user_model, settings, tmp_path, start_worker
):
    root = django_user_model.objects.create_superuser("root", password="pw-root-1")
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    auth = bearer(token_create(user=root).raw)
    settings.MIGRATION_LOCK_WAIT = 0.2
    settings.MIGRATION_API_RATE_RUN = "1000/m"
    start_worker(MIGRATION_LOCK_WAIT="0.2")

    def get(path, headers=auth, documented=None, **extra):
        response = client.get(API + path, headers=headers, **extra)
        assert_documented(response, documented or path.split("?")[0], "GET")
        return response

    def post(path="run", body=None, headers=auth, **extra):
        response = client.post(
            API + path,
            run_body() if body is None else body,
            content_type="application/json",
            headers=headers,
            **extra,
        )
        assert_documented(response, path.split("?")[0], "POST")
        return response

    seen = set()
    write_numbered(target, 2)
    for response in (
        get("status"),  # pending
        get("history"),  # empty
        get("openapi.json"),
        post(body="{}"),
        post(body="not json"),
        post(headers={}),
        post(headers=bearer(token_create(user=staff).raw)),
        post(REMOTE_ADDR="198.51.100.7"),
        get("status?database=nope"),
        post("run?database=nope"),
    ):
        seen.add(response.status_code)
    with psycopg.connect(target.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(target.dbname, "public")])
        seen.add(post().status_code)  # 409 locked
        seen.add(get("status").status_code)  # with lock_holder
    seen.add(post().status_code)  # success
    seen.add(post().status_code)  # up_to_date
    queued = post(body='{"confirm": true, "wait": false}')  # 202
    seen.add(queued.status_code)
    run_id = queued.json()["run"]
    while get(f"runs/{run_id}", documented="runs/{run_id}").json()["state"] == "queued":
        time.sleep(0.2)
    seen.add(get("runs/999999", documented="runs/{run_id}").status_code)  # 404 unknown run
    get("status")
    get("history")
    target.write("001_t1.sql", "CREATE TABLE t1 (id bigint);\n")
    seen.add(post().status_code)  # 409 refused (drift)
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    target.write("003_bad.sql", "SELECT * FROM no_such_table;\n")
    seen.add(post().status_code)  # 500 migration failed
    get("status")  # with a failed row
    get("history")
    from migration_console.targets import TargetConfig

    settings.MIGRATION_TARGETS = {
        **settings.MIGRATION_TARGETS,
        "db_down": TargetConfig(
            "db_down", "host=127.0.0.1 port=1 dbname=x", "public", str(tmp_path)
        ),
    }
    seen.add(get("status?database=db_down").status_code)  # 503
    settings.MIGRATION_API_RATE_READ = "1/m"
    cache.clear()
    get("history")
    seen.add(get("history").status_code)  # 429

    assert seen >= {200, 202, 400, 401, 403, 404, 409, 429, 500, 503}
