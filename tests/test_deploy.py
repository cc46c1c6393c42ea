"""deploy/: every YAML parses, every `migrate_sql` call in it runs against a real
database, and every environment name it sets is one of SPEC's settings.

There is no Docker engine or Kubernetes API here: the Dockerfile is checked by
reading it, and its ENTRYPOINT/CMD and collectstatic line run for real in
tests/test_gunicorn.py.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_manage

DEPLOY = ROOT / "deploy"
HELM = DEPLOY / "helm" / "migration-console"

# SPEC.md, "Settings (environment)": the only names the console reads.
SPEC_SETTINGS = {
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DATABASE_URL",
    "DB_DSN",
    "DB_SCHEMA",
    "MIGRATIONS_PATH",
    "MIGRATION_TARGETS_FILE",
    "REDIS_URL",
    "CONSOLE_ALLOWED_NETWORKS",
    "CONSOLE_TRUSTED_PROXIES",
    "MIGRATION_LOCK_WAIT",
    "MIGRATION_LOCK_TIMEOUT",
    "MIGRATION_LOCK_RETRIES",
    "MIGRATION_LOCK_RETRY_MAX_WAIT",
    "MIGRATION_API_WAIT",
    "MIGRATION_WEBHOOK_URL",
    "SKIP_MIGRATIONS",
}
# Names read by other programs, not by the console.
OTHER_PROGRAMS = {
    "POSTGRES_PASSWORD",  # postgres image
    "POSTGRES_DB",  # postgres image
    "PYTHONDONTWRITEBYTECODE",  # python
    "PYTHONUNBUFFERED",  # python
    "PIP_NO_CACHE_DIR",  # pip, build time
    "PIP_DISABLE_PIP_VERSION_CHECK",  # pip, build time
}


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def yaml_files() -> list[Path]:
    """Plain YAML (Helm templates hold {{ }} and are read as text)."""
    return [
        p
        for p in deploy_files()
        if p.suffix in (".yml", ".yaml") and HELM / "templates" not in p.parents
    ]


def helm_templates() -> list[Path]:
    return sorted((HELM / "templates").glob("*.yaml"))


def migrate_sql_calls(text: str) -> list[tuple[str, ...]]:
    """Arguments after `migrate_sql`, from exec-form lists and from shell lines."""
    calls = []
    for match in re.finditer(r"\[[^\[\]]*\"migrate_sql\"[^\[\]]*\]", text):
        argv = json.loads(match.group(0))
        calls.append(tuple(argv[argv.index("migrate_sql") + 1 :]))
    for match in re.finditer(r"manage\.py\s+migrate_sql\b([^\n\"'\]]*)", text):
        calls.append(tuple(shlex.split(match.group(1))))
    return calls


def all_calls() -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = {}
    for path in deploy_files():
        for call in migrate_sql_calls(path.read_text()):
            found.setdefault(call, []).append(str(path.relative_to(ROOT)))
    return found


def env_names() -> dict[str, set[str]]:
    """Environment names each deploy file gives a process."""
    names: dict[str, set[str]] = {}

    def add(path: Path, name: str) -> None:
        names.setdefault(str(path.relative_to(ROOT)), set()).add(name)

    for path in deploy_files():
        text = path.read_text()
        # Kubernetes / Helm container env entries.
        for match in re.finditer(r"^\s*-\s+name:\s+([A-Z][A-Z0-9_]*)\s*$", text, re.M):
            add(path, match.group(1))
        if path.name == "Dockerfile":
            for block in re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", text, re.M):
                for name in re.findall(r"([A-Z][A-Z0-9_]*)=", block):
                    add(path, name)
            for name in re.findall(r"\b([A-Z][A-Z0-9_]*)=\S", text):
                add(path, name)
        if path.name.endswith(".env"):
            for name in re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.M):
                add(path, name)
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for name in service.get("environment", {}) or {}:
            add(DEPLOY / "docker-compose.yml", name)
    workflow = yaml.safe_load((DEPLOY / "github-actions" / "migrate.yml").read_text())
    for job in workflow["jobs"].values():
        for name in job.get("env", {}) or {}:
            add(DEPLOY / "github-actions" / "migrate.yml", name)
        for step in job["steps"]:
            for name in step.get("env", {}) or {}:
                add(DEPLOY / "github-actions" / "migrate.yml", name)
    return names


# --- files ------------------------------------------------------------------


def test_deploy_holds_every_recipe_spec_names():
    for relative in (
        "Dockerfile",
        "docker-compose.yml",
        "kubernetes/job.yaml",
        "kubernetes/cronjob.yaml",
        "github-actions/migrate.yml",
        "helm/migration-console/Chart.yaml",
        "helm/migration-console/values.yaml",
        "helm/migration-console/templates/migrate-hook-job.yaml",
        "helm/migration-console/templates/worker-deployment.yaml",
    ):
        assert (DEPLOY / relative).is_file(), relative


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert documents, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in documents)


def test_the_kubernetes_job_and_cronjobs_run_migrate_sql_with_db_dsn_from_a_secret():
    job = yaml.safe_load((DEPLOY / "kubernetes" / "job.yaml").read_text())
    assert job["kind"] == "Job"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["python", "manage.py", "migrate_sql"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_DSN"]["valueFrom"]["secretKeyRef"]["key"] == "DB_DSN"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    cronjobs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()))
    assert {doc["kind"] for doc in cronjobs} == {"CronJob"}
    for cron in cronjobs:
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert "migrate_sql" in container["args"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["DB_DSN"]["valueFrom"]


def test_the_compose_file_runs_postgres_a_one_shot_migration_and_the_console():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["migrate"]["command"][2:4] == ["migrate_sql", "run"]
    console = services["console"]
    assert console["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert console["environment"]["SKIP_MIGRATIONS"] == "true"
    # DB_DSN comes from the (uncommitted) env file, never a literal in the recipe.
    assert services["migrate"]["environment"]["DB_DSN"].startswith("${DB_DSN:?")


def test_the_compose_file_runs_a_migration_worker_beside_the_console():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    worker = services["worker"]
    assert worker["command"] == ["python", "manage.py", "migration_worker"]
    assert worker["image"] == services["console"]["image"]
    # The same console database and targets as the console, whose runs it executes.
    for name in ("DATABASE_URL", "DB_DSN", "MIGRATIONS_PATH", "DJANGO_SECRET_KEY"):
        assert worker["environment"][name] == services["console"]["environment"][name], name
    assert worker["volumes"] == services["console"]["volumes"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["restart"] == "unless-stopped" and worker["stop_grace_period"]


def test_the_helm_chart_runs_a_worker_deployment_scaled_by_its_own_value():
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    assert isinstance(values["worker"]["replicas"], int) and values["worker"]["replicas"] >= 1
    assert values["worker"]["terminationGracePeriodSeconds"] > 0
    worker = (HELM / "templates" / "worker-deployment.yaml").read_text()
    assert "kind: Deployment" in worker
    assert "replicas: {{ .Values.worker.replicas }}" in worker
    assert re.search(r'args: \["python", "manage.py", "migration_worker"', worker)
    assert 'include "migration-console.env"' in worker  # secrets by reference, as the web
    assert "app.kubernetes.io/component: worker" in worker
    web = (HELM / "templates" / "deployment.yaml").read_text()
    assert "component: web" in web and "component: worker" not in web  # apart selectors


def test_the_worker_command_of_the_recipes_exists(target, cli_env):
    result = run_manage(cli_env, "migration_worker", "--help")
    assert result.returncode == 0, result.stderr
    assert "--concurrency" in result.stdout


def test_the_workflow_runs_status_run_check_then_deploys_with_skip_migrations():
    workflow = yaml.safe_load((DEPLOY / "github-actions" / "migrate.yml").read_text())
    migrate = workflow["jobs"]["migrate"]
    assert migrate["env"]["DB_DSN"] == "${{ secrets.DB_DSN }}"
    commands = [step["run"] for step in migrate["steps"] if "run" in step]
    calls = [migrate_sql_calls(command)[0] for command in commands if "migrate_sql" in command]
    assert calls == [("status",), ("run", "--yes"), ("check",)]
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "migrate"
    assert deploy["env"]["SKIP_MIGRATIONS"] == "true"


def test_the_helm_chart_parses_and_its_pre_upgrade_hook_runs_migrate_sql():
    chart = yaml.safe_load((HELM / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "migration-console"
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    assert values["existingSecret"]
    assert values["migrate"]["enabled"] is True

    hook = (HELM / "templates" / "migrate-hook-job.yaml").read_text()
    assert re.search(r'"helm\.sh/hook":\s*pre-install,pre-upgrade', hook)
    assert "kind: Job" in hook
    assert ("run", "--yes") in migrate_sql_calls(hook)
    assert "secretKeyRef" in (HELM / "templates" / "_helpers.tpl").read_text()
    deployment = (HELM / "templates" / "deployment.yaml").read_text()
    assert re.search(r"name: SKIP_MIGRATIONS\s+value: \"true\"", deployment)
    for template in helm_templates():
        text = template.read_text()
        assert text.count("{{") == text.count("}}"), template


def test_the_dockerfile_is_slim_non_root_and_serves_with_gunicorn():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", text, re.M).group(1))
    assert cmd[:3] == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert "collectstatic" in text
    # PYTHONDONTWRITEBYTECODE + a read-only /app: compiled at build, not on every call.
    assert re.search(
        r"^RUN python -m compileall -q manage\.py migration_console accounts$", text, re.M
    )
    for source in re.findall(r"^COPY\s+(.+)\s+\S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), f"COPY {item}: not in the repository"


def test_env_names_in_deploy_are_spec_settings():
    names = env_names()
    assert "DB_DSN" in names["deploy/kubernetes/job.yaml"]
    assert "DB_DSN" in names["deploy/docker-compose.yml"]
    assert "DB_DSN" in names["deploy/github-actions/migrate.yml"]
    unknown = {
        file: sorted(found - SPEC_SETTINGS - OTHER_PROGRAMS)
        for file, found in names.items()
        if found - SPEC_SETTINGS - OTHER_PROGRAMS
    }
    assert unknown == {}


# --- every migrate_sql call runs --------------------------------------------


def test_every_migrate_sql_call_in_deploy_is_valid(target, cli_env):
    calls = all_calls()
    assert ("run", "--yes") in calls and ("check",) in calls and ("status",) in calls
    target.write("001_deploy_probe.sql", "CREATE TABLE deploy_probe (id int);\n")
    # `check` exits 1 while something is pending: run it after the others.
    ordered = sorted(calls, key=lambda call: call[:1] == ("check",))
    for call in ordered:
        result = run_manage(cli_env, "migrate_sql", *call)
        assert result.returncode == 0, (call, calls[call], result.stdout, result.stderr)
    assert target.table_exists("deploy_probe")


def test_the_entrypoint_brings_console_tables_up_then_execs_the_command(target, cli_env):
    import subprocess
    import sys

    env = dict(cli_env, PATH=f"{Path(sys.executable).parent}:{cli_env['PATH']}")
    result = subprocess.run(
        [
            "sh",
            str(DEPLOY / "docker-entrypoint.sh"),
            "python",
            "manage.py",
            "migrate_sql",
            "status",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert target.name in result.stdout
