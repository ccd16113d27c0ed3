"""``manage.py provider add NAME --base-url URL [--api-key-env VAR] [--timeout S] [--max-retries N]
[--strict-output | --no-strict-output]``,
``manage.py provider price NAME MODEL --input USD --output USD`` (per million tokens) and
``manage.py provider list``. ``add`` and ``price`` update what exists, so they are safe to repeat."""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from runs.models import Provider
from runs.services import ProviderInvalid, model_price_set, provider_save


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
        add.add_argument(
            "--strict-output",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Send response schemas with strict: true (default for a new provider: on; "
            "left out, an existing provider keeps its setting).",
        )
        price = sub.add_parser("price", help="Set a model's price per million tokens.")
        price.add_argument("name")
        price.add_argument("model")
        price.add_argument("--input", type=_amount, required=True, help="Per million input tokens.")
        price.add_argument(
            "--output", type=_amount, required=True, help="Per million output tokens."
        )
        sub.add_parser("list", help="List providers and their prices.")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            for p in Provider.objects.order_by("name"):
                key = f"key from ${p.api_key_env}" if p.api_key_env else "no key"
                self.stdout.write(
                    f"{p.name}  {p.base_url}  {key}  timeout {p.timeout_seconds:g}s  "
                    f"retries {p.max_retries}{'' if p.strict_output else '  non-strict output'}"
                    f"{'' if p.enabled else '  (disabled)'}"
                )
                for price in p.prices.order_by("model"):
                    self.stdout.write(
                        f"  {price.model}  {price.input_per_million:f} in / "
                        f"{price.output_per_million:f} out per million tokens"
                    )
            return
        if action == "price":
            try:
                price = model_price_set(
                    provider=options["name"],
                    model=options["model"],
                    input_per_million=options["input"],
                    output_per_million=options["output"],
                )
            except ProviderInvalid as exc:
                raise CommandError(_problems(exc)) from exc
            self.stdout.write(f"Price of {options['name']}/{price.model} set.")
            return
        try:
            provider, created = provider_save(
                name=options["name"],
                base_url=options["base_url"],
                api_key_env=options["api_key_env"],
                timeout_seconds=options["timeout"],
                max_retries=options["max_retries"],
                strict_output=options["strict_output"],
            )
        except ProviderInvalid as exc:
            raise CommandError(_problems(exc)) from exc
        verb = "Added" if created else "Updated"
        self.stdout.write(f"{verb} provider {provider.name} at {provider.base_url}.")


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except (
        InvalidOperation
    ) as exc:  # argparse only turns ValueError and TypeError into usage errors
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from exc


def _problems(exc: ProviderInvalid) -> str:
    return "; ".join(f"{p.pointer[1:]}: {p.detail}" for p in exc.problems)
