"""The audit table refuses TRUNCATE too (0002's row trigger never sees it).

A statement-level trigger calls 0002's function, which raises naming the
operation. It guards against a stray or injected TRUNCATE by the application's
role; a role that owns the table could still drop the trigger, so a deployment
that must resist its own application role gives the table to another owner.
"""

from django.db import migrations

FORBID = """
CREATE TRIGGER core_auditevent_no_truncate
    BEFORE TRUNCATE ON core_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION core_auditevent_append_only();
"""

ALLOW = "DROP TRIGGER IF EXISTS core_auditevent_no_truncate ON core_auditevent;"


class Migration(migrations.Migration):
    dependencies = [("core", "0002_audit_append_only")]

    operations = [migrations.RunSQL(FORBID, ALLOW)]
