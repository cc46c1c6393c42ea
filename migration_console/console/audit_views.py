"""Audit review: the append-only audit rows, filtered by user, action, outcome,
channel, target and date, a page at a time or as CSV."""

import csv
from datetime import datetime

from django import forms
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from migration_console.console.guards import admin_context, audit_view_required
from migration_console.core.models import AuditEvent, Channel

AUDIT_PAGE_SIZE = 50


# --- audit review ------------------------------------------------------------------------------
_DATE_ATTRS = {"placeholder": "YYYY-MM-DD", "pattern": r"\d{4}-\d{2}-\d{2}", "size": 10}


class AuditFilterForm(forms.Form):
    user = forms.CharField(required=False, label="User")
    action = forms.ChoiceField(required=False)
    outcome = forms.ChoiceField(
        required=False, choices=[("", "any"), *list(AuditEvent.Outcome.choices)]
    )
    channel = forms.ChoiceField(required=False, choices=[("", "any"), *list(Channel.choices)])
    target = forms.CharField(required=False)
    # Typed as the console shows dates (the browser's date widget would show its
    # locale's mm/dd/yyyy beside the pages' YYYY-MM-DD).
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs=_DATE_ATTRS, format="%Y-%m-%d")
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs=_DATE_ATTRS, format="%Y-%m-%d")
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        actions = AuditEvent.objects.order_by("action").values_list("action", flat=True)
        self.fields["action"].choices = [("", "any")] + [(a, a) for a in actions.distinct()]

    def filter(self, queryset):
        if not self.is_valid():
            return queryset.none()
        data = self.cleaned_data
        if data["user"]:
            queryset = queryset.filter(actor__icontains=data["user"])
        for field in ("action", "outcome", "channel", "target"):
            if data[field]:
                queryset = queryset.filter(**{field: data[field]})
        if data["date_from"]:
            queryset = queryset.filter(created_at__date__gte=data["date_from"])
        if data["date_to"]:
            queryset = queryset.filter(created_at__date__lte=data["date_to"])
        return queryset


def _filtered_audit(request) -> tuple[AuditFilterForm, object]:
    """The filter form bound to the query string, and the events it selects."""
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.all()
    return form, (form.filter(events) if request.GET else events)


@require_GET
@audit_view_required
def audit_review(request):
    form, events = _filtered_audit(request)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = admin_context(
        request,
        title="Audit review",
        form=form,
        page=page,
        query=query.urlencode(),
        total=page.paginator.count,
    )
    return render(request, "console/audit.html", context)


AUDIT_COLUMNS = (
    "id",
    "created_at",
    "actor",
    "client_ip",
    "channel",
    "target",
    "action",
    "outcome",
    "migrations",
    "message",
    "token_prefix",
    "run_id",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    """Plain text for spreadsheets: a cell that would start a formula is quoted."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    def write(self, value):
        return value


@require_GET
@audit_view_required
def audit_export(request):
    _, events = _filtered_audit(request)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(AUDIT_COLUMNS)
        for event in events.iterator(chunk_size=1000):
            yield writer.writerow([_csv_cell(getattr(event, column)) for column in AUDIT_COLUMNS])

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
