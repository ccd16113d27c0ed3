"""The site around the admin and the API (issue 13, item 9): the home page "View site" leads to,
the liveness check, the favicon, the admin index in order of use, the login box ``make run`` ends
with, and the README's commands written for any port."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from api.demo_login import AdminLogin, admin_login, kept_password, password_path
from api.management.commands.devserver import Command as DevServer
from api.management.commands.devserver import login_box
from config.site import app_list_by_use
from tests.factories import PromptFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(client: Client, db) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


# --- the home page, health, favicon -------------------------------------------------------------


def test_the_home_page_says_what_this_is_and_where_to_go(client: Client, db) -> None:
    PromptFactory(key="secret.internal-prompt", description="Nobody outside should read this.")

    response = client.get("/")

    assert response.status_code == 200
    body = response.content.decode()
    assert "Prompt Registry" in body
    for name in ("admin:index", "docs", "schema", "healthz", "readyz"):
        assert f'href="{reverse(name)}"' in body, name
    # Public: nothing the registry holds.
    assert "secret.internal-prompt" not in body
    assert "Nobody outside" not in body


def test_the_home_page_reads_nothing_and_takes_no_post(
    client: Client, db, django_assert_num_queries
) -> None:
    with django_assert_num_queries(0):
        assert client.get("/").status_code == 200
    assert client.post("/").status_code == 405


def test_view_site_leads_to_the_home_page(root: Client) -> None:
    body = root.get(reverse("admin:index")).content.decode()

    assert re.search(r'<a href="/">\s*View site\s*</a>', body)
    assert root.get("/").status_code == 200


def test_healthz_answers_without_touching_anything(
    client: Client, db, django_assert_num_queries
) -> None:
    with django_assert_num_queries(0):
        response = client.get(reverse("healthz"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert client.post(reverse("healthz")).status_code == 405


def test_every_admin_page_names_the_favicon_and_favicon_ico_leads_to_it(
    client: Client, root: Client
) -> None:
    icon = "/static/registry/favicon.svg"
    for path in (reverse("admin:index"), reverse("admin:registry_prompt_changelist")):
        assert f'<link rel="icon" href="{icon}"' in root.get(path).content.decode(), path
    client.logout()
    assert f'<link rel="icon" href="{icon}"' in client.get(reverse("admin:login")).content.decode()
    assert f'href="{icon}"' in client.get("/").content.decode()

    response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response["Location"] == icon
    assert (
        (ROOT / "registry" / "static" / "registry" / "favicon.svg").read_text().startswith("<svg")
    )


# --- the admin index in order of use ----------------------------------------------------------


def labels(response) -> list[str]:
    return [app["app_label"] for app in response.context["app_list"]]


def test_the_index_orders_sections_by_use(root: Client) -> None:
    response = root.get(reverse("admin:index"))

    assert labels(response) == ["registry", "releases", "evaluations", "runs", "webhooks", "auth"]
    models = {
        a["app_label"]: [m["object_name"] for m in a["models"]]
        for a in response.context["app_list"]
    }
    assert models["registry"] == ["Prompt", "PromptVersion"]
    assert models["releases"][0] == "Release"
    assert models["evaluations"][:3] == ["Dataset", "EvalRun", "ExperimentResults"]
    assert models["runs"][0] == "Call"
    assert models["webhooks"] == ["Subscription", "Delivery"]
    assert models["auth"] == ["User", "Group"]


def test_the_sidebar_has_the_same_order(root: Client) -> None:
    response = root.get(reverse("admin:registry_prompt_changelist"))

    apps = [a["app_label"] for a in response.context["available_apps"]]
    assert apps == ["registry", "releases", "evaluations", "runs", "webhooks", "auth"]


def test_the_order_holds_when_evaluations_holds_only_the_ab_results(client: Client, db) -> None:
    """Someone who reads prompts and calls: evaluations' app list hook adds an "Evaluations"
    section with A/B results alone (and sorts by name); the order of use still wins."""
    user = UserFactory(username="reader", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_prompt", "view_call"]))
    client.force_login(user)

    response = client.get(reverse("admin:index"))

    assert labels(response) == ["registry", "evaluations", "runs"]


def test_unknown_apps_come_before_users_and_groups() -> None:
    def app(label: str, name: str) -> dict:
        return {"app_label": label, "name": name, "models": []}

    ordered = app_list_by_use(
        [
            app("auth", "Authentication"),
            app("api", "API keys"),
            app("runs", "Runs"),
            app("registry", "Prompts"),
        ]
    )

    assert [a["app_label"] for a in ordered] == ["registry", "runs", "api", "auth"]


# --- make run's login box -----------------------------------------------------------------------


def test_the_box_shows_the_admin_and_its_login() -> None:
    box = login_box(base_url="http://127.0.0.1:8123/", login=AdminLogin("admin", "s3cret-pass"))

    lines = box.strip().splitlines()
    assert lines[0] == lines[-1]
    assert set(lines[0]) == {"+", "="}
    assert len({len(line) for line in lines}) == 1  # a closed box
    assert "Admin      http://127.0.0.1:8123/admin/" in box
    assert "User       admin" in box
    assert "Password   s3cret-pass" in box
    assert "http://127.0.0.1:8123/api/v1/docs/" in box


def test_the_box_says_when_the_password_is_not_the_demos() -> None:
    own = login_box(base_url="http://h:1/", login=AdminLogin("admin", None))
    none = login_box(base_url="http://h:1/", login=None)

    assert "its own (manage.py changepassword admin resets it)" in own
    assert "manage.py demo" in none


@pytest.fixture
def var_dir(tmp_path, settings):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_the_login_is_the_kept_password_only_while_it_opens_the_account(var_dir, db) -> None:
    from django.contrib.auth import get_user_model

    assert admin_login() is None
    password = kept_password(password_path())
    user = get_user_model().objects.create_superuser("admin", "a@example.com", password)
    assert admin_login() == AdminLogin("admin", password)

    user.set_password("another one")
    user.save()
    assert admin_login() == AdminLogin("admin", None)
    assert password_path().read_text().strip() == password  # reading it changed nothing


def test_devserver_prints_the_box_last_once_it_listens(var_dir, db) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser(
        "admin", "a@example.com", kept_password(password_path())
    )
    out = StringIO()
    command = DevServer(stdout=out, no_color=True)
    command.addr, command._raw_ipv6, command.protocol, command.use_ipv6 = (
        "127.0.0.1",
        False,
        "http",
        False,
    )

    command.on_bind(8123)

    printed = out.getvalue()
    assert printed.index("Starting development server at http://127.0.0.1:8123/") < printed.index(
        "+====="
    )
    assert printed.rstrip().endswith("=+")  # nothing after the box
    assert "http://127.0.0.1:8123/admin/" in printed.split("+=====", 1)[1]
    assert f"Password   {password_path().read_text().strip()}" in printed


def test_make_run_serves_with_the_box_on_the_port_it_was_given() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun: install\n", 1)[1].split("\n\n", 1)[0]

    assert "manage.py devserver $(HOST):$(PORT)" in recipe
    assert "--admin-url http://$(HOST):$(PORT)/admin/" in recipe
    assert "runserver" not in recipe


# --- the README's commands work on any port -------------------------------------------------------


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
)
def test_commands_name_the_registry_by_a_variable_set_once(doc: str) -> None:
    """Every address of the registry in a shell block is ``$REGISTRY``; the only literal one is
    where the README sets it, so ``make run PORT=8123`` needs one line changed."""
    for block in shell_blocks((ROOT / doc).read_text()):
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)  # comments may say what the default is
            if line.strip().startswith("export REGISTRY="):
                continue
            assert not re.search(r"(127\.0\.0\.1|localhost):8000", line), (doc, line)
            for match in re.finditer(r"/api/v1/", line):
                assert line[: match.start()].endswith("$REGISTRY"), (doc, line)


def test_the_readme_sets_the_variable_before_its_first_command() -> None:
    readme = (ROOT / "README.md").read_text()

    blocks = [b for b in shell_blocks(readme) if "$REGISTRY" in b or "REGISTRY=" in b]
    assert blocks[0].strip() == "export REGISTRY=http://127.0.0.1:8000"
    assert 'os.environ["REGISTRY"]' in readme  # the SDK example reads it too
