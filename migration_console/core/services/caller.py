"""Who asks for a recorded action: the one value every recorded service call takes.

Each channel builds its ``Caller`` once (the API from its token or session, the
console from ``request.user`` and the client IP, ``migrate_sql`` from the OS user
or the console Run row it claims, startup as ``startup``) and hands it to
``run_execute``, ``maintenance_execute``, ``run_start``, ``audit_record`` and
their siblings, which copy it into the Run and audit rows.
"""

import getpass
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caller:
    """``actor``: the name recorded as who did it (a user name, the OS user,
    ``startup``); ``channel``: console, api, cli or startup; ``user``: the Django
    user when there is one; ``client_ip``: the request's client IP; ``token_prefix``:
    the API token's prefix, when a token was used."""

    actor: str
    channel: str
    user: Any = None
    client_ip: str | None = None
    token_prefix: str = ""
    # migrate_sql --break-glass: past the target's approvals/window policy, loudly.
    break_glass: bool = False

    @classmethod
    def cli(cls, *, break_glass: bool = False) -> "Caller":
        """``migrate_sql`` run by hand, by CI or by a Job: the OS user, channel ``cli``."""
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            actor = f"uid:{os.getuid()}"
        return cls(actor=actor, channel="cli", break_glass=break_glass)

    @classmethod
    def of_run(cls, run) -> "Caller":
        """The caller a Run row recorded: for the runner that claims a queued console
        run, and for the audit row of a run whose runner died."""
        return cls(
            actor=run.requested_by,
            channel=run.channel,
            user=run.user,
            client_ip=run.client_ip,
        )
