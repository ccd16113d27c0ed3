"""``manage.py devserver``: Django's ``runserver`` (the staticfiles one), ending its banner with
the admin's address and login in a box, printed once the server is listening.

``make run`` serves with it. Printed from ``on_bind``, after runserver's own banner and warning,
so the box is the last thing on screen before the request log, whatever the port; the
autoreloader prints it again after each reload. The login comes from ``api.demo_login``: the
password ``manage.py demo`` keeps in ``var/``, only if it still opens the ``admin`` account.
"""

from __future__ import annotations

from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand

from api.demo_login import AdminLogin, admin_login

WIDTH = 64


def login_box(*, base_url: str, login: AdminLogin | None) -> str:
    """The box, as lines of text: where the admin is and how to log in."""
    lines = ["Prompt Registry is running", "", f"Admin      {base_url}admin/"]
    if login is None:
        lines.append("Login      no admin user yet: manage.py demo (or createsuperuser)")
    elif login.password is None:
        lines += [
            f"User       {login.username}",
            f"Password   its own ({login.reset_command} resets it)",
        ]
    else:
        lines += [f"User       {login.username}", f"Password   {login.password}"]
    lines += ["", f"API docs   {base_url}api/v1/docs/", f"Home       {base_url}"]
    width = max(WIDTH, *(len(line) + 4 for line in lines))
    border = "+" + "=" * (width - 2) + "+"
    body = [f"|  {line.ljust(width - 6)}  |" for line in lines]
    return "\n".join(["", border, *body, border, ""])


class Command(RunserverCommand):
    help = "Run the development server and print the admin's address and login once it listens."

    def on_bind(self, server_port: int) -> None:
        super().on_bind(server_port)
        addr = (
            f"[{self.addr}]" if self._raw_ipv6 else ("0.0.0.0" if self.addr == "0" else self.addr)
        )
        box = login_box(base_url=f"{self.protocol}://{addr}:{server_port}/", login=admin_login())
        self.stdout.write(self.style.SUCCESS(box))
