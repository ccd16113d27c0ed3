"""The demo's admin login: the password ``manage.py demo`` generates and keeps, and whether it
still opens the ``admin`` account. Shared by ``demo`` (which creates the account) and
``devserver`` (which shows the login once the server listens)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

ADMIN_USERNAME = "admin"


@dataclass(frozen=True, slots=True)
class AdminLogin:
    username: str
    password: str | None  # None: the account has a password of its own, not the kept one

    @property
    def reset_command(self) -> str:
        return f"manage.py changepassword {self.username}"


def password_path() -> Path:
    return settings.VAR_DIR / "admin-password.txt"


def kept_password(path: Path) -> str:
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


def admin_login() -> AdminLogin | None:
    """The ``admin`` account's login as the demo left it, without changing anything: None when
    there is no such account; no password when the kept one (if any) does not open it."""
    user = get_user_model().objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        return None
    path = password_path()
    kept = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    return AdminLogin(ADMIN_USERNAME, kept if kept and user.check_password(kept) else None)
