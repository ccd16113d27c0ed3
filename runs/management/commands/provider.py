"""``manage.py provider add NAME --base-url URL [--api-key-env VAR] [--timeout S] [--max-retries N]``
and ``manage.py provider list``. ``add`` updates a provider that exists, so it is safe to repeat."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.models import Provider
from runs.services import ProviderInvalid, provider_save


class Command(BaseCommand):
    help = "Configure model providers (credentials stay in the environment)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Create or update a provider.")
        add.add_argument("name")
        add.add_argument("--base-url", required=True)
        add.add_argument("--api-key-env", default="", help="Environment variable with the key.")
        add.add_argument("--timeout", type=float, default=30.0, help="Seconds per attempt.")
        add.add_argument("--max-retries", type=int, default=2)
        sub.add_parser("list", help="List providers.")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            for p in Provider.objects.order_by("name"):
                key = f"key from ${p.api_key_env}" if p.api_key_env else "no key"
                self.stdout.write(
                    f"{p.name}  {p.base_url}  {key}  timeout {p.timeout_seconds:g}s  "
                    f"retries {p.max_retries}{'' if p.enabled else '  (disabled)'}"
                )
            return
        try:
            provider, created = provider_save(
                name=options["name"],
                base_url=options["base_url"],
                api_key_env=options["api_key_env"],
                timeout_seconds=options["timeout"],
                max_retries=options["max_retries"],
            )
        except ProviderInvalid as exc:
            raise CommandError(
                "; ".join(f"{p.pointer[1:]}: {p.detail}" for p in exc.problems)
            ) from exc
        verb = "Added" if created else "Updated"
        self.stdout.write(f"{verb} provider {provider.name} at {provider.base_url}.")
