"""``manage.py demo``: loads the demo prompts (once) and makes sure an admin login exists.

Idempotent: prompts that exist are left alone, so ``make run`` can call it every time. The admin's
password is generated on first use and kept in ``var/admin-password.txt`` so it stays the same
between runs; the command prints it.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from api.demo_data import PROMPTS
from registry.actors import Actor
from registry.content import VersionContent
from registry.models import Prompt
from registry.services import prompt_create, version_create

DEMO_ACTOR = Actor(label="demo")
ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = "Load the demo prompts and ensure an admin login (printed)."

    def handle(self, *args, **options) -> None:
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
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin: http://127.0.0.1:8000/admin/  user {ADMIN_USERNAME}  password {password}"
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

    def _ensure_admin(self) -> str:
        path = settings.VAR_DIR / "admin-password.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        User = get_user_model()
        user = User.objects.filter(username=ADMIN_USERNAME).first()
        if user is not None and path.exists() and user.check_password(path.read_text().strip()):
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        if user is None:
            user = User.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
