"""``MIGRATION_WEBHOOK_URL``: a Slack-compatible JSON POST after each run.

Sent after every run, rollback, baseline or repair that changed something or
failed to (success, failed, error, refused, locked); an ``up_to_date`` run that
did nothing stays quiet, so a CronJob every few minutes does not flood a channel.
The POST happens on a daemon thread that the run waits for at most
``MIGRATION_WEBHOOK_TIMEOUT`` seconds (default 3): a slow, failing or hanging
receiver is logged and never fails or stalls the run. The payload carries no
DSN; messages are scrubbed of anything that looks like a password, and the log
names only the receiver's host (a Slack webhook URL is itself a secret).
"""

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3.0
MAX_MESSAGE = 1500

_QUIET_STATES = {"up_to_date", "queued", "running"}
_LOOK = {
    # state: (verb, Slack attachment colour, emoji)
    "success": ("succeeded", "good", ":white_check_mark:"),
    "failed": ("FAILED", "danger", ":x:"),
    "error": ("ended with an error", "danger", ":x:"),
    "refused": ("was refused", "warning", ":warning:"),
    "locked": ("could not take the lock", "warning", ":lock:"),
}
_SECRETS = (
    (re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)"), r"\1***"),
    (re.compile(r"(?i)(\w[\w+.-]*://[^\s:/@]*:)[^\s@]*@"), r"\1***@"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _receiver(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def run_payload(run) -> dict:
    """Slack ``text`` + attachment fields, and the same facts machine-readable."""
    verb, colour, emoji = _LOOK.get(run.state, (run.state, "warning", ":grey_question:"))
    message = redact(run.message or "")[:MAX_MESSAGE]
    steps = list(run.steps or [])
    versions = [f"{s.get('version')}_{s.get('name')}" for s in steps] or list(run.planned or [])
    duration = None
    if run.started_at and run.finished_at:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    failed = next((s for s in steps if s.get("status") == "failed"), None)
    text = f"{emoji} Migration Console: {run.action} on *{run.target}* {verb}"
    if getattr(run, "break_glass", False):
        text = f":rotating_light: BREAK-GLASS {text} (past the target's approvals/window policy)"
    if message:
        text += f": {message}"
    fields = [
        {"title": "Database", "value": run.target, "short": True},
        {"title": "Action", "value": run.action, "short": True},
        {"title": "Outcome", "value": run.state, "short": True},
        {"title": "Channel", "value": run.channel, "short": True},
        {"title": "Requested by", "value": run.requested_by, "short": True},
        {"title": "Run", "value": f"#{run.pk}", "short": True},
    ]
    if duration is not None:
        fields.append({"title": "Duration", "value": f"{duration:.3f} s", "short": True})
    if versions:
        fields.append({"title": "Migrations", "value": ", ".join(versions), "short": False})
    if failed:
        fields.append(
            {
                "title": "Error",
                "value": redact(str(failed.get("error") or ""))[:MAX_MESSAGE],
                "short": False,
            }
        )
    return {
        "text": text,
        "attachments": [
            {
                "fallback": text,
                "color": colour,
                "title": f"{run.action} on {run.target}: {run.state}",
                "fields": fields,
                "ts": int(run.finished_at.timestamp()) if run.finished_at else None,
            }
        ],
        "migration_console": {
            "run_id": run.pk,
            "database": run.target,
            "action": run.action,
            "outcome": run.state,
            "channel": run.channel,
            "requested_by": run.requested_by,
            "migrations": versions,
            "failed_version": failed.get("version") if failed else None,
            "message": message,
            "duration_seconds": duration,
            "break_glass": bool(getattr(run, "break_glass", False)),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
    }


def webhook_post(url: str, payload: dict, *, timeout: float) -> bool:
    """POST ``payload``; wait at most ``timeout`` seconds. True when the receiver said 2xx."""
    if urlsplit(url).scheme not in ("http", "https"):
        logger.error("webhook: MIGRATION_WEBHOOK_URL must be an http(s) URL; not sent")
        return False
    body = json.dumps(payload).encode()
    result = {"ok": False}

    def send() -> None:
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "migration-console"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read(1024)
                result["ok"] = True
        except urllib.error.HTTPError as exc:
            logger.warning("webhook: %s answered HTTP %s", _receiver(url), exc.code)
        except Exception as exc:
            logger.warning("webhook: POST to %s failed: %s", _receiver(url), exc)

    thread = threading.Thread(target=send, name="migration-console-webhook", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        logger.warning(
            "webhook: %s did not answer within %ss; run continues", _receiver(url), timeout
        )
    return result["ok"]


_REQUEST_LOOK = {
    "requested": ("needs approval", "warning", ":raised_hand:"),
    "approved": ("approved", "good", ":ballot_box_with_check:"),
    "rejected": ("rejected", "danger", ":no_entry:"),
    "expired": ("expired unapproved", "warning", ":hourglass:"),
    "stale": ("is stale: its plan changed, nothing ran", "warning", ":warning:"),
    "break_glass": ("BREAK-GLASS run", "danger", ":rotating_light:"),
}


def request_payload(run, event: str, actor: str, message: str) -> dict:
    """A change-management event: request, approval, rejection, expiry, stale,
    break-glass; links to the request's page in the console."""
    verb, colour, emoji = _REQUEST_LOOK.get(event, (event, "warning", ":grey_question:"))
    path = f"/admin/console/requests/{run.pk}/"
    message = redact(message or "")[:MAX_MESSAGE]
    text = f"{emoji} Migration Console: {run.action} #{run.pk} on *{run.target}* {verb}"
    if message:
        text += f": {message}"
    return {
        "text": f"{text} <{path}|review>",
        "attachments": [
            {
                "fallback": text,
                "color": colour,
                "title": f"{run.action} #{run.pk} on {run.target}: {event}",
                "fields": [
                    {"title": "Database", "value": run.target, "short": True},
                    {"title": "Requested by", "value": run.requested_by, "short": True},
                    {"title": "By", "value": actor, "short": True},
                    {"title": "Planned", "value": ", ".join(run.planned or []), "short": False},
                ],
            }
        ],
        "migration_console": {
            "event": event,
            "run_id": run.pk,
            "database": run.target,
            "action": run.action,
            "state": run.state,
            "requested_by": run.requested_by,
            "actor": actor,
            "url": path,
            "message": message,
            "break_glass": bool(getattr(run, "break_glass", False)),
        },
    }


def notify_request_event(run, event: str, actor: str, message: str) -> None:
    """Post a change-management event; never raises."""
    url = getattr(settings, "MIGRATION_WEBHOOK_URL", "")
    if not url:
        return
    try:
        timeout = float(getattr(settings, "MIGRATION_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT))
        webhook_post(url, request_payload(run, event, actor, message), timeout=timeout)
    except Exception:
        logger.exception("webhook: could not notify about run %s", getattr(run, "pk", "?"))


def notify_run_finished(run) -> None:
    """Called once per finished run (``run_execute``); never raises."""
    url = getattr(settings, "MIGRATION_WEBHOOK_URL", "")
    if not url or (run.state in _QUIET_STATES and not getattr(run, "break_glass", False)):
        return
    try:
        timeout = float(getattr(settings, "MIGRATION_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT))
        webhook_post(url, run_payload(run), timeout=timeout)
    except Exception:
        logger.exception("webhook: could not notify about run %s", getattr(run, "pk", "?"))
