"""``manage.py demo``: loads the demo prompts (once) and makes sure an admin login exists.

The demo's bindings name the ``local`` provider, and a binding must name a configured provider, so
the command configures ``local`` at the fake provider's default address when it is missing (``make
run`` configures it first, at its own port, and that one is kept).

Idempotent: prompts that exist are left alone, so ``make run`` can call it every time. The admin's
password is generated on first use and kept in ``var/admin-password.txt`` (mode 0600) so it stays
the same between runs, even on a fresh database; the command prints it. An ``admin`` user whose
password was set some other way keeps it.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from api.demo_data import PROMPTS, RELEASES
from registry.actors import Actor
from registry.content import VersionContent
from registry.models import Prompt
from registry.services import prompt_create, version_create
from releases import services as releases
from releases.selectors import environment_get
from runs.models import ModelPrice, Provider
from runs.services import model_price_set, provider_save

RELEASE_STEPS = {
    "deploy": releases.release_deploy,
    "canary_start": releases.release_canary_start,
    "canary_percent": releases.release_canary_set_percent,
    "experiment_start": releases.release_experiment_start,
    "shadow_start": releases.release_shadow_start,
}

DEMO_ACTOR = Actor(label="demo")
ADMIN_USERNAME = "admin"
ADMIN_URL = "http://127.0.0.1:8000/admin/"  # where ``make run`` serves it by default
LOCAL_PROVIDER = "local"  # what every demo binding names
LOCAL_PROVIDER_URL = "http://127.0.0.1:8765/v1"  # python -m runs.fake_provider's default port
DEMO_PRICES = {"echo-1": ("0.50", "1.50"), "echo-small": ("0.15", "0.60")}  # per million tokens


class Command(BaseCommand):
    help = "Load the demo prompts and their releases, and ensure an admin login (printed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--admin-url", default=ADMIN_URL, help="Where the admin is served.")

    def handle(self, *args, **options) -> None:
        if not Provider.objects.filter(name=LOCAL_PROVIDER).exists():
            provider_save(name=LOCAL_PROVIDER, base_url=LOCAL_PROVIDER_URL, timeout_seconds=10.0)
            self.stdout.write(f"Provider {LOCAL_PROVIDER}: added at {LOCAL_PROVIDER_URL}.")
        # Example prices, so the demo's calls and shadow reports show costs; a price already set
        # (in the admin or with `provider price`) is left alone.
        for model, (given, taken) in DEMO_PRICES.items():
            if not ModelPrice.objects.filter(provider__name=LOCAL_PROVIDER, model=model).exists():
                model_price_set(
                    provider=LOCAL_PROVIDER,
                    model=model,
                    input_per_million=Decimal(given),
                    output_per_million=Decimal(taken),
                )
        created = 0
        for spec in PROMPTS:
            if Prompt.objects.filter(key=spec["key"]).exists():
                continue
            self._load(spec)
            created += 1
        self.stdout.write(
            f"Demo prompts: {created} loaded, {len(PROMPTS) - created} already there."
        )
        password = self._ensure_admin()
        if password is None:
            self.stdout.write(
                f"Admin: {options['admin_url']}  user {ADMIN_USERNAME} has a password of its own "
                f"(manage.py changepassword {ADMIN_USERNAME} resets it)."
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Admin: {options['admin_url']}  user {ADMIN_USERNAME}  password {password}"
                )
            )

    @transaction.atomic
    def _load(self, spec: dict) -> None:
        prompt = prompt_create(
            key=spec["key"],
            actor=DEMO_ACTOR,
            description=spec["description"],
            default_locale=spec["default_locale"],
            tags=spec["tags"],
        )
        for version in spec["versions"]:
            version_create(
                prompt=prompt,
                actor=DEMO_ACTOR,
                message=version["message"],
                content=VersionContent.from_dict(version),
                commit=not version.get("draft", False),
            )
        for step, environment, arguments in RELEASES.get(spec["key"], []):
            RELEASE_STEPS[step](
                prompt=prompt,
                environment=environment_get(name=environment),
                actor=DEMO_ACTOR,
                **arguments,
            )

    def _ensure_admin(self) -> str | None:
        """The admin login's password, or None when ``admin`` has a password of its own.

        1. Take the password kept in ``VAR_DIR/admin-password.txt``, or write a new one there.
        2. No ``admin`` user: create the superuser with it.
        3. An ``admin`` whose password is another one keeps it: someone set it (``createsuperuser``,
           ``changepassword``), and ``make run`` must not take their login away.
        """
        password = _kept_password(settings.VAR_DIR / "admin-password.txt")
        User = get_user_model()
        user = User.objects.filter(username=ADMIN_USERNAME).first()
        if user is None:
            User.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
            return password
        return password if user.check_password(password) else None


def _kept_password(path: Path) -> str:
    """The password in ``path``, or a new one written there readable by its owner only."""
    if path.exists() and (kept := path.read_text(encoding="utf-8").strip()):
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    # Created 0600 from the start: a chmod after writing would leave a moment where others read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    return password
