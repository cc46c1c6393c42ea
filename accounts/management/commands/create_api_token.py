"""``create_api_token USER [--expires-days N] [--name LABEL]``: print a new token once."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from accounts.tokens import token_create, user_for_token
from migration_console.core.services.caller import Caller

EXIT_BAD_INPUT = 2


class Command(BaseCommand):
    help = (
        "Create an API token for USER and print it once (only its hash is stored). "
        "Any active user may hold a token; only a superuser's token may act on the API."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", metavar="USER")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            metavar="N",
            help="the token stops working after N days (default: never)",
        )
        parser.add_argument("--name", default="", help="a label: what the token is for")

    def handle(self, *args, **options):
        username = options["username"]
        days = options["expires_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-days must be at least 1", returncode=EXIT_BAD_INPUT)
        user = user_for_token(username=username)
        if user is None:
            raise CommandError(f"no user {username!r}", returncode=EXIT_BAD_INPUT)
        if not user.is_active:
            raise CommandError(f"user {username!r} is not active", returncode=EXIT_BAD_INPUT)
        issued = token_create(
            user=user,
            name=options["name"],
            expires_in=timedelta(days=days) if days is not None else None,
            caller=Caller.cli(),
        )
        # The token itself goes to stdout alone, so `TOKEN=$(... -v0)` captures it.
        self.stdout.write(issued.raw)
        if options["verbosity"] > 0:
            expiry = (
                f"expires {issued.token.expires_at:%Y-%m-%d %H:%M UTC}"
                if issued.token.expires_at
                else "never expires"
            )
            self.stderr.write(
                f"Token {issued.token.prefix} for {username}, {expiry}. "
                "It is shown only now: store it in a secret manager."
            )
            if not user.is_superuser:
                self.stderr.write(
                    self.style.WARNING(
                        f"{username} is not a superuser: the API will answer 403 to this token."
                    )
                )
