"""``manage.py apikey create|list|revoke``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from api.models import ApiKey
from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db


def apikey(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_create_prints_the_key_alone_on_its_last_line_and_it_authenticates():
    out, err = apikey("create", "ci-prompts", "--scope", "prompts:read", "--scope", "prompts:write")

    raw = out.strip().splitlines()[-1]
    assert raw.startswith("pr_")
    assert " " not in raw
    assert "not shown again" in err
    key = ApiKey.objects.get(name="ci-prompts")
    assert key.scopes == ["prompts:read", "prompts:write"]
    assert key.environments == []
    response = bearer(raw).post("/api/v1/prompts", {"key": "support.new"}, format="json")
    assert response.status_code == 201


def test_create_limits_a_key_to_environments():
    out, _ = apikey(
        "create",
        "prod-service",
        "--scope",
        "prompts:read",
        "--environment",
        "production",
        "--environment",
        "staging",
    )

    key = ApiKey.objects.get(name="prod-service")
    assert key.environments == ["production", "staging"]
    assert bearer(out.strip().splitlines()[-1]).get("/api/v1/prompts").status_code == 200


def test_a_created_key_has_only_its_scopes():
    out, _ = apikey("create", "reader", "--scope", "prompts:read")

    response = bearer(out.strip().splitlines()[-1]).post(
        "/api/v1/prompts", {"key": "support.new"}, format="json"
    )

    assert_problem(response, 403, "/problems/insufficient-scope")


def test_create_refuses_an_unknown_scope():
    with pytest.raises(CommandError, match="prompts:admin"):
        apikey("create", "ci", "--scope", "prompts:admin")

    assert not ApiKey.objects.exists()


def test_create_refuses_an_environment_that_does_not_exist():
    with pytest.raises(CommandError, match="prodution"):
        apikey("create", "ci", "--scope", "prompts:read", "--environment", "prodution")

    assert not ApiKey.objects.exists()


def test_create_needs_a_scope():
    with pytest.raises(CommandError):
        apikey("create", "ci")

    assert not ApiKey.objects.exists()


def test_create_refuses_a_blank_name():
    with pytest.raises(CommandError, match="Name the key"):
        apikey("create", "  ", "--scope", "prompts:read")

    assert not ApiKey.objects.exists()


def test_list_shows_keys_but_never_their_secrets():
    first, _ = apikey("create", "ci-prompts", "--scope", "prompts:write")
    second, _ = apikey(
        "create", "service", "--scope", "prompts:read", "--environment", "production"
    )
    secrets = [o.strip().splitlines()[-1] for o in (first, second)]

    out, _ = apikey("list")

    for raw in secrets:
        assert raw not in out
        assert raw.split("_", 2)[2] not in out
    lines = out.strip().splitlines()
    assert len(lines) == 2
    ci, service = (line.split() for line in lines)
    assert ci[1:] == ["ci-prompts", "prompts:write", "*", "active"]
    assert service[1:] == ["service", "prompts:read", "production", "active"]
    assert ci[0] == ApiKey.objects.get(name="ci-prompts").lookup_id


def test_revoke_stops_a_key_from_authenticating():
    out, _ = apikey("create", "leaked", "--scope", "prompts:read")
    raw = out.strip().splitlines()[-1]
    key = ApiKey.objects.get(name="leaked")
    assert bearer(raw).get("/api/v1/prompts").status_code == 200

    out, _ = apikey("revoke", key.lookup_id)

    assert "Revoked leaked" in out
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert_problem(bearer(raw).get("/api/v1/prompts"), 401, "/problems/unauthenticated")
    assert "revoked" in apikey("list")[0]


def test_revoke_refuses_an_unknown_id():
    with pytest.raises(CommandError, match="No key"):
        apikey("revoke", "000000000000")
