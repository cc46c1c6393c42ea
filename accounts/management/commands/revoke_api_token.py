"""``revoke_api_token TOKEN_OR_PREFIX``: the token stops working at once."""

from django.core.management.base import BaseCommand, CommandError

from accounts.tokens import token_find, token_revoke
from migration_console.core.services.caller import Caller

EXIT_BAD_INPUT = 2


class Command(BaseCommand):
    help = "Revoke an API token, named by its full value or its prefix (mc_xxxxxxxx)."

    def add_arguments(self, parser):
        parser.add_argument("token_or_prefix", metavar="TOKEN_OR_PREFIX")

    def handle(self, *args, **options):
        token = token_find(token_or_prefix=options["token_or_prefix"])
        if token is None:
            raise CommandError("no such token", returncode=EXIT_BAD_INPUT)
        if token_revoke(token=token, caller=Caller.cli()):
            self.stdout.write(
                self.style.SUCCESS(f"Revoked {token.prefix} of {token.user.get_username()}.")
            )
        else:
            self.stdout.write(
                f"{token.prefix} of {token.user.get_username()} was already revoked "
                f"at {token.revoked_at:%Y-%m-%d %H:%M:%S UTC}."
            )
