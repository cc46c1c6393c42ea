"""API tokens: created once, stored hashed, revocable at once, audited, superusers only."""

import hashlib
import io
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken
from accounts.tokens import (
    TokenError,
    looks_like_token,
    token_authenticate,
    token_create,
    token_find,
    token_revoke,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")


def command(name: str, *args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except CommandError as error:
        return error.returncode, out.getvalue(), str(error)
    return 0, out.getvalue(), err.getvalue()


def test_a_created_token_is_stored_only_as_its_hash(root):
    issued = token_create(user=root, name="ci")

    assert looks_like_token(issued.raw)
    assert issued.raw.startswith(issued.token.prefix + "_")
    row = ApiToken.objects.values().get()
    assert issued.raw not in str(row.values())
    assert row["token_hash"] == hashlib.sha256(issued.raw.encode()).hexdigest()
    assert row["prefix"] == issued.raw[:11]
    assert token_create(user=root).raw != issued.raw


def test_it_authenticates_a_valid_token_and_records_when_it_was_used(root):
    issued = token_create(user=root)

    token = token_authenticate(raw=issued.raw)

    assert token.pk == issued.token.pk and token.user == root
    assert ApiToken.objects.get().last_used_at is not None


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda t: t.raw[:-1] + ("A" if t.raw[-1] != "A" else "B"), "invalid token"),
        (lambda t: t.raw.upper(), "invalid token"),
        (lambda t: t.raw + "x", "invalid token"),
        (lambda t: t.token.prefix, "invalid token"),
        (lambda t: "", "invalid token"),
        (lambda t: t.token.token_hash, "invalid token"),
    ],
)
def test_it_refuses_anything_but_the_exact_token(root, spoil, reason):
    issued = token_create(user=root)
    with pytest.raises(TokenError) as refused:
        token_authenticate(raw=spoil(issued))
    assert refused.value.reason == reason


def test_it_refuses_expired_revoked_and_deactivated_users_tokens(root, django_user_model):
    expired = token_create(user=root, expires_in=timedelta(seconds=-1))
    revoked = token_create(user=root)
    token_revoke(token=revoked.token)
    other = django_user_model.objects.create_superuser("left", password="pw-left-1")
    orphan = token_create(user=other)
    other.is_active = False
    other.save()

    for issued, reason in (
        (expired, "token expired"),
        (revoked, "token revoked"),
        (orphan, "user is not active"),
    ):
        with pytest.raises(TokenError) as refused:
            token_authenticate(raw=issued.raw)
        assert refused.value.reason == reason
        assert refused.value.token.pk == issued.token.pk


def test_create_api_token_prints_the_token_once_and_stores_its_hash(root):
    code, out, err = command("create_api_token", "root", "--expires-days", "7", "--name", "ci")

    assert code == 0, err
    raw = out.strip()
    assert looks_like_token(raw) and out.count(raw) == 1
    token = token_find(token_or_prefix=raw)
    assert token.user == root and token.name == "ci"
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    assert raw not in err and token.prefix in err
    assert token_authenticate(raw=raw).pk == token.pk


def test_create_api_token_warns_that_a_non_superusers_token_cannot_act(django_user_model):
    django_user_model.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)

    code, _, err = command("create_api_token", "viewer")

    assert code == 0
    assert "not a superuser" in err
    assert ApiToken.objects.get().expires_at is None


def test_create_api_token_refuses_unknown_and_inactive_users_and_bad_expiry(
    root, django_user_model
):
    django_user_model.objects.create_user("gone", password="pw-gone-1", is_active=False)

    assert command("create_api_token", "nobody")[0] == 2
    assert command("create_api_token", "gone")[0] == 2
    assert command("create_api_token", "root", "--expires-days", "0")[0] == 2
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("name_it", ["full token", "prefix", "prefix without mc_"])
def test_revoke_api_token_stops_a_token_at_once(root, name_it):
    issued = token_create(user=root)
    value = {
        "full token": issued.raw,
        "prefix": issued.token.prefix,
        "prefix without mc_": issued.token.prefix[3:],
    }[name_it]

    code, out, _ = command("revoke_api_token", value)

    assert code == 0 and "Revoked" in out
    with pytest.raises(TokenError, match="revoked"):
        token_authenticate(raw=issued.raw)
    code, out, _ = command("revoke_api_token", value)
    assert code == 0 and "already revoked" in out


def test_revoke_api_token_fails_for_an_unknown_token_without_echoing_it(root):
    token_create(user=root)
    code, _, message = command("revoke_api_token", "mc_00000000_" + "A" * 43)
    assert code == 2 and "A" * 43 not in message
    assert command("revoke_api_token", "'; DROP TABLE x; --")[0] == 2
    assert ApiToken.objects.active().count() == 1


def test_auditlog_records_creating_and_revoking_a_token_without_its_hash(root):
    issued = token_create(user=root, name="deploy")
    token_revoke(token=issued.token)

    entries = list(LogEntry.objects.get_for_object(issued.token).order_by("timestamp", "pk"))

    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert "revoked_at" in entries[1].changes_dict
    for entry in entries:
        assert "token_hash" not in entry.changes_dict
        assert issued.token.token_hash not in str(entry.changes)
        assert entry.additional_data["prefix"] == issued.token.prefix


def test_auditlog_records_user_changes_without_the_password(root):
    root.is_superuser = False
    root.set_password("pw-new-secret-2")
    root.save()

    entry = LogEntry.objects.get_for_object(root).latest("timestamp")
    assert "is_superuser" in entry.changes_dict
    assert "password" not in entry.changes_dict


# --- the console (Django admin): list, create once, revoke; superusers only -------


def test_a_superuser_creates_a_token_in_the_console_and_sees_it_only_once(root):
    browser = Client()
    browser.force_login(root)
    form = browser.get("/admin/accounts/apitoken/add/")
    assert form.status_code == 200 and "Create token" in form.content.decode()
    assert (
        "/admin/accounts/apitoken/add/" in browser.get("/admin/accounts/apitoken/").content.decode()
    )

    page = browser.post(
        "/admin/accounts/apitoken/add/", {"user": root.pk, "name": "console", "expires_days": "30"}
    )

    assert page.status_code == 200
    token = ApiToken.objects.get()
    html = page.content.decode()
    start = html.index(token.prefix + "_")
    raw = html[start : start + 55]
    assert token_authenticate(raw=raw).pk == token.pk
    assert "no-store" in page["Cache-Control"]
    listing = browser.get("/admin/accounts/apitoken/").content.decode()
    assert token.prefix in listing and raw not in listing
    detail = browser.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert raw not in detail and token.token_hash not in detail
    assert LogEntry.objects.get_for_object(token).filter(actor=root).exists()


def test_a_superuser_revokes_tokens_from_the_console_list(root):
    keep, drop = token_create(user=root), token_create(user=root)
    browser = Client()
    browser.force_login(root)

    response = browser.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [drop.token.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked 1 token(s)" in response.content.decode()
    assert token_authenticate(raw=keep.raw)
    with pytest.raises(TokenError):
        token_authenticate(raw=drop.raw)


def test_creating_and_revoking_tokens_are_audit_rows_from_every_channel(root):
    from migration_console.core.models import AuditEvent

    code, raw, _ = command("create_api_token", "root", "--name", "ci", "-v", "0")
    assert code == 0
    prefix = raw.strip()[:11]
    assert command("revoke_api_token", prefix)[0] == 0
    browser = Client()
    browser.force_login(root)
    browser.post("/admin/accounts/apitoken/add/", {"user": root.pk, "name": "ui"})
    made = ApiToken.objects.get(name="ui")
    browser.post(
        "/admin/accounts/apitoken/", {"action": "revoke_tokens", "_selected_action": [made.pk]}
    )
    rows = list(
        AuditEvent.objects.filter(action__startswith="token_")
        .order_by("id")
        .values_list("action", "channel", "outcome", "message")
    )
    assert [(a, c, o) for a, c, o, _ in rows] == [
        ("token_create", "cli", "success"),
        ("token_revoke", "cli", "success"),
        ("token_create", "console", "success"),
        ("token_revoke", "console", "success"),
    ]
    assert prefix in rows[0][3] and "ci" in rows[0][3] and made.prefix in rows[3][3]
    assert all(raw.strip() not in message for *_, message in rows)
    review = browser.get("/admin/console/audit/?action=token_revoke").content.decode()
    assert made.prefix in review


def test_staff_without_superuser_cannot_see_or_mint_tokens(root, django_user_model):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__endswith="apitoken"))
    token_create(user=root)
    browser = Client()
    browser.force_login(staff)

    assert browser.get("/admin/accounts/apitoken/").status_code == 403
    minted = browser.post("/admin/accounts/apitoken/add/", {"user": root.pk})
    assert minted.status_code == 403
    assert ApiToken.objects.count() == 1
