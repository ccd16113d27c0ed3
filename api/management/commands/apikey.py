"""``manage.py apikey create NAME --scope S [--scope S…] [--environment E] [--owner USERNAME]``;
``list``; ``revoke``.

``create`` prints the new key alone on its last line, so scripts can take ``| tail -n1``.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.models import ApiKey, Scope
from api.services import ApiKeyInvalid, apikey_create, apikey_revoke


class Command(BaseCommand):
    help = "Create, list and revoke API keys."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key; prints it once.")
        create.add_argument("name")
        create.add_argument(
            "--scope",
            action="append",
            required=True,
            dest="scopes",
            choices=[str(s) for s in Scope],
        )
        create.add_argument(
            "--environment",
            action="append",
            default=[],
            dest="environments",
            help="Limit the key to this environment (repeatable).",
        )
        create.add_argument(
            "--owner",
            default=None,
            help="The user this key acts for: it may review change requests as they may.",
        )
        sub.add_parser("list", help="List keys (never their secrets).")
        revoke = sub.add_parser("revoke", help="Revoke a key by its id (the part after pr_).")
        revoke.add_argument("lookup_id")

    def handle(self, *args, action: str, **options) -> None:
        if action == "create":
            owner = None
            if options["owner"] is not None:
                owner = get_user_model().objects.filter(username=options["owner"]).first()
                if owner is None:
                    raise CommandError(f"No user {options['owner']!r}.")
            try:
                key, raw = apikey_create(
                    name=options["name"],
                    scopes=options["scopes"],
                    environments=options["environments"],
                    owner=owner,
                )
            except ApiKeyInvalid as exc:
                raise CommandError("; ".join(p.detail for p in exc.problems)) from exc
            limits = ", ".join(key.environments) or "every environment"
            self.stderr.write(
                f"Created {key.name}: scopes {', '.join(key.scopes)}; {limits}. "
                "Store it now: it is not shown again."
            )
            self.stdout.write(raw)
        elif action == "list":
            for key in ApiKey.objects.order_by("name"):
                state = "revoked" if key.revoked_at else "active"
                self.stdout.write(
                    f"{key.lookup_id}  {key.name}  {','.join(key.scopes)}  "
                    f"{','.join(key.environments) or '*'}  {state}"
                )
        elif action == "revoke":
            key = ApiKey.objects.filter(lookup_id=options["lookup_id"]).first()
            if key is None:
                raise CommandError(f"No key with id {options['lookup_id']}.")
            apikey_revoke(key=key)
            self.stdout.write(f"Revoked {key.name}.")
